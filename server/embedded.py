"""`atlasrec federate` on embedded defaults: the aggregator and in-process tenant clients.

One Flower client per tenant homed in the region runs in this process
(`server.local_grid.LocalGrid`).

Every tenant of the region gets a node, solo tenants too: their clients refuse to join (and
the refusal is audited), as a misconfigured deployment would see.
"""

from __future__ import annotations

import hashlib
import logging

from atlasrec.errors import InvalidInputError, RefusedError
from atlasrec.leakage import federation_stopped
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from clients.app import make_client_app
from server import global_tier
from server.federation import FederationConfig, FederationResult, run_federation
from server.local_grid import LocalGrid


def node_id(tenant_id: str) -> int:
    """A stable node id per tenant (63 bits, never 0 or 1: Flower's reserved ids)."""
    return 2 + int.from_bytes(hashlib.sha256(tenant_id.encode()).digest()[:7], "big")


def quiet_duplicate_logs() -> None:
    """Print each Flower log record once.

    Flower's logger has its own console handler; opacus installs a root handler at import
    (`logging.basicConfig` in `opacus.utils.module_utils`), so records that also propagate
    to the root were printed twice, the second time in opacus's format.
    """
    logging.getLogger("flwr").propagate = False


def run_embedded(
    platform: Platform, region: Region, config: FederationConfig, *, actor: str, workers: int = 1
) -> FederationResult:
    """Run (or resume) the region's federation in this process, then the global tier."""
    quiet_duplicate_logs()
    if federation_stopped(platform, region):
        raise RefusedError(
            f"region {region.value!r}: federation is stopped after a leakage finding "
            "(`atlasrec monitor leakage`); an officer resumes it with "
            "`atlasrec monitor resume-federation`"
        )
    tenants = platform.control.list_tenants(region)
    if not tenants:
        raise InvalidInputError(f"region {region.value!r} has no tenants to federate")
    nodes: dict[int, dict[str, bool | float | int | str]] = {
        node_id(t.id): {"tenant-id": t.id, "region": region.value} for t in tenants
    }
    grid = LocalGrid(make_client_app(lambda: platform), nodes, workers=workers)
    result = run_federation(platform, region, grid, config, actor=actor)
    global_tier.combine(platform, actor=actor)
    return result
