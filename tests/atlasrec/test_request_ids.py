"""Request ids are bound to the tenant and region they were issued to."""

from __future__ import annotations

import secrets

from hypothesis import given
from hypothesis import strategies as st

from atlasrec.request_ids import RequestIds
from atlasrec.tenancy import Region

SECRET = b"test-secret-" + b"x" * 32
TENANT = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
NONCE = st.text("0123456789abcdef", min_size=32, max_size=32)


@given(issuer=TENANT, other=TENANT, nonce=NONCE, region=st.sampled_from(list(Region)))
def test_an_id_verifies_for_its_tenant_and_region_only(
    issuer: str, other: str, nonce: str, region: Region
) -> None:
    ids = RequestIds(SECRET, region)
    issued = ids.issue(issuer, nonce)
    assert len(issued) == 32 and int(issued, 16) >= 0
    assert ids.issued_to(issuer, issued)
    assert ids.issued_to(other, issued) == (other == issuer)
    elsewhere = next(r for r in Region if r != region)
    assert not RequestIds(SECRET, elsewhere).issued_to(issuer, issued)
    assert not RequestIds(SECRET + b"!", region).issued_to(issuer, issued)


@given(tenant=TENANT, request_id=st.one_of(NONCE, st.text(max_size=40)))
def test_only_the_id_issued_for_its_nonce_is_accepted(tenant: str, request_id: str) -> None:
    ids = RequestIds(SECRET, Region.EU)
    genuine = len(request_id) == 32 and request_id == ids.issue(tenant, request_id)
    assert ids.issued_to(tenant, request_id) == genuine


def test_a_tampered_tag_or_nonce_is_refused() -> None:
    ids = RequestIds(SECRET, Region.EU)
    issued = ids.issue("shop", secrets.token_hex(16))
    for at in (0, 19, 20, 31):
        flipped = issued[:at] + ("0" if issued[at] != "0" else "1") + issued[at + 1 :]
        assert not ids.issued_to("shop", flipped)
