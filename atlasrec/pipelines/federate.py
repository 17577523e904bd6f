"""Federated rounds of one region's backbone, run in this process."""

from __future__ import annotations

from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from server.embedded import run_embedded
from server.federation import FederationConfig, FederationResult


def federate_region(region: Region, config: FederationConfig, *, actor: str) -> FederationResult:
    """Run (or resume) the region's federation on the configured platform, then close it."""
    platform = Platform()
    try:
        return run_embedded(platform, region, config, actor=actor)
    finally:
        platform.close()
