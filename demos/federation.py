"""The demo's federation step: Flower rounds in every region, and the cross-region tier.

Each region's regional and global tenants train the encrypted backbone; solo tenants
never join (their clients refuse, audited).
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.table import Table

from atlasrec.datasets import TenantDataset
from atlasrec.federation.store import global_store, region_store
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from server.embedded import run_embedded
from server.federation import FederationConfig

ROUNDS, ROUND_EPSILON = 2, 1.0


def federate_regions(
    console: Console, platform: Platform, datasets: list[TenantDataset], actor: str
) -> None:
    """Run each region's federation once (a re-run keeps the backbones and spends nothing)."""
    logging.getLogger("flwr").setLevel(logging.WARNING)
    table = Table(title="Federated backbone (Flower rounds, CKKS-encrypted, user-level DP)")
    for col in ("region", "rounds", "participants (epsilon per round)", "not joining", "backbone"):
        table.add_column(col)
    for region in Region:
        homed = [ds for ds in datasets if ds.region == region]
        members = [ds.tenant_id for ds in homed if ds.sharing != SharingPolicy.SOLO]
        solo = ", ".join(
            f"{ds.tenant_id} (solo)" for ds in homed if ds.sharing == SharingPolicy.SOLO
        )
        if not members:
            table.add_row(region.value, "-", "no tenant may federate", solo, "-")
            continue
        latest = region_store(platform.settings, region).latest()
        if latest is not None:
            table.add_row(
                region.value,
                "unchanged",
                ", ".join(sorted(latest.metadata["contributors"])),
                solo,
                latest.version,
            )
            continue
        console.print(f"federating region {region.value}: {', '.join(members)} ...")
        config = FederationConfig(
            rounds=ROUNDS,
            round_epsilon=ROUND_EPSILON,
            local_epochs=1,
            min_participants=min(2, len(members)),
        )
        result = run_embedded(platform, region, config, actor=actor)
        for entry in result.rounds:
            eps = ", ".join(
                f"{t} {p['epsilon']:.2f}" for t, p in sorted(entry["participants"].items())
            )
            refused = ", ".join(sorted(k for k in entry["refused"] if not k.startswith("node:")))
            table.add_row(
                region.value,
                str(entry["round"]),
                eps,
                refused or solo,
                entry["backbone_out"] or "-",
            )
    console.print(table)
    combined = global_store(platform.settings).latest()
    if combined is not None:
        console.print(
            f"global backbone {combined.version}: shares of regions "
            f"{', '.join(sorted(combined.metadata['shares']))} from global tenants "
            f"{', '.join(sorted(combined.metadata['contributors']))} only\n"
        )
