"""Ingest a tenant's files in its home region (the tenant named by id)."""

from __future__ import annotations

from pathlib import Path

from atlasrec.ingest import IngestReport, ingest
from atlasrec.platform import Platform


def ingest_tenant(
    platform: Platform,
    tenant_id: str,
    *,
    items: Path | None,
    interactions: Path | None,
    actor: str,
) -> IngestReport:
    """Load a tenant's catalog and/or interactions in one transaction (nothing on error)."""
    scope = platform.scope(tenant_id)
    return ingest(
        platform.plane(scope.region),
        scope,
        secret=platform.secret,
        actor=actor,
        items=items,
        interactions=interactions,
    )
