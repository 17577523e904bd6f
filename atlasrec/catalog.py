"""Policy attributes of catalog items: what the serving policy filter enforces.

Items carry free-form attributes (extra CSV columns, or `attributes` in PUT
/v1/catalog/items). These names have a meaning, checked when an item is written:

- `blocked`: `true`/`false` (also 1/0, yes/no): a blocked item is never served;
- `in_stock`: `true`/`false`: an item out of stock is never served;
- `min_age`: an integer 0..130: served only when the request's `context.user_age` is
  known and at least this;
- `countries`: ISO 3166-1 alpha-2 codes separated by spaces, commas or `|`: served only
  when the request's `context.country` is one of them;
- `excluded_countries`: codes where the item is never served;

and two business rules of the re-ranking stage:

- `boost`: a factor > 0 on the item's relevance (e.g. 1.5 promotes, 0.5 demotes);
- `bury`: `true` moves the item behind every item that is not buried.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

POLICY_ATTRIBUTES = (
    "blocked",
    "in_stock",
    "min_age",
    "countries",
    "excluded_countries",
    "boost",
    "bury",
)
MAX_BOOST = 100.0
_TRUE, _FALSE = {"true", "1", "yes", "y"}, {"false", "0", "no", "n"}
_COUNTRY = re.compile(r"^[A-Z]{2}$")
MAX_AGE = 130


class PolicyAttributeError(ValueError):
    """An item's policy attribute is malformed; names the attribute."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"attribute {field!r}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class ItemPolicy:
    """The serving restrictions of one item."""

    blocked: bool = False
    in_stock: bool = True
    min_age: int = 0
    countries: frozenset[str] | None = None
    excluded_countries: frozenset[str] = frozenset()
    boost: float = 1.0
    bury: bool = False

    def allows(self, user_age: int | None, country: str | None) -> bool:
        """Whether the item may be served in a request with this context."""
        if self.blocked or not self.in_stock:
            return False
        if self.min_age > 0 and (user_age is None or user_age < self.min_age):
            return False
        if self.countries is not None and (country is None or country not in self.countries):
            return False
        return country is None or country not in self.excluded_countries


OPEN = ItemPolicy()


def _flag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise PolicyAttributeError(field, f"{value!r} is not true/false")


def _countries(value: Any, field: str) -> frozenset[str]:
    parts = value if isinstance(value, list) else re.split(r"[\s,|]+", str(value).strip())
    codes = {str(p).strip().upper() for p in parts if str(p).strip()}
    bad = sorted(c for c in codes if not _COUNTRY.fullmatch(c))
    if bad:
        raise PolicyAttributeError(field, f"{bad[0]!r} is not an ISO 3166-1 alpha-2 code")
    return frozenset(codes)


def _boost(value: Any) -> float:
    try:
        boost = float(value)
    except (TypeError, ValueError):
        raise PolicyAttributeError("boost", f"{value!r} is not a number") from None
    if not 0 < boost <= MAX_BOOST:
        raise PolicyAttributeError("boost", f"{value!r} must be > 0 and at most {MAX_BOOST:g}")
    return boost


def parse_policy(attributes: Mapping[str, Any]) -> ItemPolicy:
    """The policy of an item with these attributes; PolicyAttributeError if one is malformed."""
    if not any(name in attributes for name in POLICY_ATTRIBUTES):
        return OPEN
    min_age = attributes.get("min_age", 0)
    if isinstance(min_age, bool) or not str(min_age).strip().isdigit():
        raise PolicyAttributeError("min_age", f"{min_age!r} is not a whole number of years")
    if int(min_age) > MAX_AGE:
        raise PolicyAttributeError("min_age", f"{min_age!r} is over {MAX_AGE}")
    countries = attributes.get("countries")
    return ItemPolicy(
        boost=_boost(attributes.get("boost", 1.0)),
        bury=_flag(attributes.get("bury", False), "bury"),
        blocked=_flag(attributes.get("blocked", False), "blocked"),
        in_stock=_flag(attributes.get("in_stock", True), "in_stock"),
        min_age=int(min_age),
        countries=None if countries is None else _countries(countries, "countries"),
        excluded_countries=_countries(
            attributes.get("excluded_countries", ""), "excluded_countries"
        ),
    )
