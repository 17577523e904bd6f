"""Event types: the built-in ones, a tenant's own, and their weights."""

from __future__ import annotations

import pytest

from atlasrec.errors import InvalidInputError
from atlasrec.event_types import BUILT_IN, parse_types, tenant_types


def test_a_tenants_own_types_add_to_and_reweigh_the_built_in_ones() -> None:
    own = parse_types("shop", "wishlist=0.3, purchase=10")
    assert own == {"wishlist": 0.3, "purchase": 10.0}
    accepted = tenant_types(own)
    assert accepted["wishlist"] == 0.3 and accepted["purchase"] == 10.0
    assert accepted["view"] == BUILT_IN["view"] and tenant_types(None) == BUILT_IN


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("Wishlist=1", "'Wishlist'"),
        ("wishlist", "'wishlist'"),
        ("wishlist=0", "weight 0.0"),
        ("wishlist=nan", "weight nan"),
        ("wishlist=-1", "weight -1.0"),
        ("wishlist=abc", "weight nan"),
        ("a=1,a=2", "'a=2'"),
        (",".join(f"t{n}=1" for n in range(33)), "33 given"),
    ],
)
def test_bad_types_are_refused_naming_the_tenant_and_the_type(spec: str, named: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        parse_types("shop", spec)
    assert "'shop'" in str(refused.value) and named in str(refused.value)
