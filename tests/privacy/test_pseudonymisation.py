"""Pseudonyms are stable per tenant, unlinkable across tenants; wrapped keys stay home."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlasrec.errors import CrossRegionError
from atlasrec.tenancy import Region, Scope
from privacy.pseudonymisation import Pseudonymiser, new_tenant_key, unwrap_key, wrap_key

SECRET = b"s" * 32
scopes = st.builds(
    Scope, st.from_regex(r"[a-z][a-z0-9-]{1,10}", fullmatch=True), st.sampled_from(list(Region))
)


@given(user=st.text(min_size=1, max_size=50))
def test_pseudonyms_are_stable_and_key_dependent(user: str) -> None:
    k1, k2 = b"a" * 32, b"b" * 32
    p1 = Pseudonymiser(k1)
    assert p1(user) == Pseudonymiser(k1)(user)
    assert p1(user) != Pseudonymiser(k2)(user)
    assert user not in p1(user) or len(user) < 3
    assert len(p1(user)) == 32


@given(a=st.text(min_size=1, max_size=20), b=st.text(min_size=1, max_size=20))
def test_distinct_users_get_distinct_pseudonyms(a: str, b: str) -> None:
    p = Pseudonymiser(b"k" * 32)
    assert (p(a) == p(b)) == (a == b)


@given(scope=scopes, other=scopes)
def test_wrapped_key_only_unwraps_for_its_own_scope(scope: Scope, other: Scope) -> None:
    key = new_tenant_key()
    wrapped = wrap_key(SECRET, scope, key)
    assert key not in wrapped
    assert unwrap_key(SECRET, scope, wrapped) == key
    if other != scope:
        with pytest.raises(CrossRegionError):
            unwrap_key(SECRET, other, wrapped)


def test_wrapped_key_needs_the_platform_secret() -> None:
    scope = Scope("acme", Region.EU)
    wrapped = wrap_key(SECRET, scope, new_tenant_key())
    with pytest.raises(CrossRegionError):
        unwrap_key(b"t" * 32, scope, wrapped)
