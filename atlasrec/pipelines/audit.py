"""Audit read-outs of a region: its hash chain checked, its records listed."""

from __future__ import annotations

from atlasrec.dataplane.tables import AuditRecord
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from audit.ledger import Verification


def verify_region(platform: Platform, region: Region) -> Verification:
    """Check the region's hash chain."""
    return platform.plane(region).ledger.verify()


def region_records(
    platform: Platform, region: Region, *, tenant_id: str | None, action: str | None, limit: int
) -> list[AuditRecord]:
    """A region's audit records, oldest first (tenant and action prefix optional)."""
    return platform.plane(region).ledger.records(tenant_id=tenant_id, action=action, limit=limit)
