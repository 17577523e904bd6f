"""Interaction event types and their weights: the built-in ones and a tenant's own.

`POST /v1/events` accepts only a known type. Built-in: `view`, `click`, `add_to_cart`,
`purchase` (the outcomes online evaluation reads: a click counts toward CTR, a purchase is a
conversion) and `interaction` (the untyped default, as `atlasrec ingest` stores it). A tenant
may add its own types, or re-weight the built-in ones (`atlasrec tenants event-types`). An
event without a `weight` gets its type's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from atlasrec.errors import InvalidInputError

INTERACTION = "interaction"
VIEW = "view"
CLICK = "click"
ADD_TO_CART = "add_to_cart"
PURCHASE = "purchase"
BUILT_IN: dict[str, float] = {
    INTERACTION: 1.0,
    VIEW: 0.5,
    CLICK: 1.0,
    ADD_TO_CART: 2.0,
    PURCHASE: 4.0,
}
"""Default weights: a stronger signal of interest weighs more (implicit-feedback practice)."""
CLICKS = frozenset({CLICK, ADD_TO_CART, PURCHASE})
"""What counts as a click on a recommended item (an add to cart or a purchase implies one)."""
CONVERSIONS = frozenset({PURCHASE})
NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_TENANT_TYPES = 32
MAX_WEIGHT = 1e6


def check_types(tenant_id: str, types: Mapping[str, float]) -> dict[str, float]:
    """A tenant's own types, validated: names, finite weights in (0, 1e6], at most 32."""
    if len(types) > MAX_TENANT_TYPES:
        raise InvalidInputError(
            f"tenant {tenant_id!r}: event types: {len(types)} given, at most "
            f"{MAX_TENANT_TYPES} may be defined"
        )
    checked = {}
    for name, weight in types.items():
        if not NAME.fullmatch(name):
            raise InvalidInputError(
                f"tenant {tenant_id!r}: event type {name!r}: a name is 1 to 32 of a-z, 0-9 "
                "and _, starting with a letter"
            )
        if not (isinstance(weight, int | float) and math.isfinite(weight)) or not (
            0 < weight <= MAX_WEIGHT
        ):
            raise InvalidInputError(
                f"tenant {tenant_id!r}: event type {name!r}: weight {weight!r} is not a "
                f"number in (0, {MAX_WEIGHT:g}]"
            )
        checked[name] = float(weight)
    return checked


def parse_types(tenant_id: str, spec: str) -> dict[str, float]:
    """`name=weight,name=weight` (the CLI's form) as validated types."""
    types: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        try:
            weight = float(value) if sep else math.nan
        except ValueError:
            weight = math.nan
        if not sep or name.strip() in types:
            raise InvalidInputError(
                f"tenant {tenant_id!r}: event types: {part!r} is not a new name=weight pair"
            )
        types[name.strip()] = weight
    return check_types(tenant_id, types)


def tenant_types(own: Mapping[str, float] | None) -> dict[str, float]:
    """Every type a tenant accepts, with its weight (its own override the built-in)."""
    return {**BUILT_IN, **(own or {})}
