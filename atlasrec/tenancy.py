"""Regions, sharing policies and the `Scope` every access to tenant data goes through."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from atlasrec.errors import InvalidInputError


class Region(StrEnum):
    """Residency regions. A region's data plane is the only place its tenants' data exists."""

    US = "us"
    EU = "eu"
    IN = "in"
    SG = "sg"


class SharingPolicy(StrEnum):
    """How far a tenant's model parameters may travel (raw data never leaves the tenant)."""

    SOLO = "solo"
    REGIONAL = "regional"
    GLOBAL = "global"


TENANT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{1,62}$")


def validate_tenant_id(tenant_id: str) -> str:
    """Return `tenant_id` if it is a safe identifier (it names folders and Redis keys)."""
    if not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise InvalidInputError(
            f"invalid tenant id {tenant_id!r}: use 2-63 characters of a-z, 0-9, '-' and '_', "
            "starting with a letter or digit"
        )
    return tenant_id


def parse_region(value: str) -> Region:
    """Parse a region code, with an error that lists the valid ones."""
    try:
        return Region(value)
    except ValueError:
        valid = ", ".join(r.value for r in Region)
        raise InvalidInputError(f"unknown region {value!r} (expected one of: {valid})") from None


@dataclass(frozen=True, slots=True)
class Scope:
    """The `(tenant_id, region)` pair that every access to tenant data is made under."""

    tenant_id: str
    region: Region

    def __str__(self) -> str:
        return f"{self.tenant_id}@{self.region.value}"
