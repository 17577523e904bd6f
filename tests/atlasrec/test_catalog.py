"""Item policy attributes: parsing, refusal of malformed values, and what each rule allows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from utils.factories import make_tenant, write_csv

from atlasrec.catalog import OPEN, ItemPolicy, PolicyAttributeError, parse_policy
from atlasrec.errors import IngestError
from atlasrec.ingest import ingest
from atlasrec.platform import Platform
from atlasrec.tenancy import Region


def test_attributes_become_a_policy() -> None:
    policy = parse_policy(
        {
            "blocked": "no",
            "in_stock": "1",
            "min_age": " 18",
            "countries": "de, fr|it",
            "excluded_countries": ["us"],
            "boost": "2.5",
            "bury": False,
            "colour": "red",
        }
    )
    assert policy == ItemPolicy(
        min_age=18,
        countries=frozenset({"DE", "FR", "IT"}),
        excluded_countries=frozenset({"US"}),
        boost=2.5,
    )
    assert parse_policy({"colour": "red"}) is OPEN


@pytest.mark.parametrize(
    ("attributes", "field", "reason"),
    [
        ({"blocked": "maybe"}, "blocked", "'maybe' is not true/false"),
        ({"min_age": "adult"}, "min_age", "not a whole number"),
        ({"min_age": -3}, "min_age", "not a whole number"),
        ({"min_age": 200}, "min_age", "over 130"),
        ({"countries": "Germany"}, "countries", "'GERMANY' is not an ISO 3166-1"),
        ({"boost": "0"}, "boost", "must be > 0"),
        ({"boost": "nan"}, "boost", "must be > 0"),
    ],
)
def test_malformed_attributes_name_the_field(
    attributes: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(PolicyAttributeError, match=reason) as caught:
        parse_policy(attributes)
    assert caught.value.field == field


@given(
    age=st.one_of(st.none(), st.integers(0, 130)),
    country=st.one_of(st.none(), st.sampled_from(["DE", "US", "IN"])),
    min_age=st.integers(0, 30),
    countries=st.one_of(st.none(), st.frozensets(st.sampled_from(["DE", "US"]))),
    excluded=st.frozensets(st.sampled_from(["US", "IN"])),
    blocked=st.booleans(),
    in_stock=st.booleans(),
)
def test_an_item_is_allowed_only_when_every_rule_allows_it(
    age: int | None,
    country: str | None,
    min_age: int,
    countries: frozenset[str] | None,
    excluded: frozenset[str],
    blocked: bool,
    in_stock: bool,
) -> None:
    policy = ItemPolicy(blocked, in_stock, min_age, countries, excluded)
    expected = (
        not blocked
        and in_stock
        and (min_age == 0 or (age is not None and age >= min_age))
        and (countries is None or country in countries)
        and (country is None or country not in excluded)
    )
    assert policy.allows(age, country) == expected


def test_ingest_refuses_a_malformed_policy_attribute_with_its_line(
    platform: Platform, tmp_path: Path
) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    items = write_csv(
        tmp_path / "items.csv",
        ("item_id", "title", "min_age"),
        [("a", "Fine", "12"), ("b", "Broken", "twelve")],
    )
    with pytest.raises(IngestError) as caught:
        ingest(platform.plane(Region.EU), scope, secret=platform.secret, actor="t", items=items)
    assert str(caught.value) == (
        "tenant 'shop': items.csv line 3: field 'min_age': 'twelve' is not a whole number of years"
    )
