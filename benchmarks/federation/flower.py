"""Full Flower rounds of one region's real aggregator against scripted clients."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, SharingPolicy
from benchmarks.stats import median
from simulations.scripted import Script, run_scripted


def flower_rounds(tenants: int, rounds: int, *, encrypt: bool) -> dict[str, Any]:
    """Full Flower rounds of one region's real aggregator against `tenants` scripted clients.

    Each round: the roster query, every client's (synthetic) update weighted and, with
    `encrypt`, CKKS-encrypted, the guards, the sum, the published backbone version and the
    ledger record. Clients run in threads of this process (`server.local_grid.LocalGrid`);
    no training, so the time is the federation machinery's own.
    """
    logging.getLogger("flwr").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="atlasrec-bench-fed-") as home:
        platform = Platform(Settings(home=Path(home)))
        try:
            for k in range(tenants):
                platform.create_tenant(
                    f"sim-{k:03d}", region=Region.EU, sharing=SharingPolicy.REGIONAL, actor="bench"
                )
            started = time.perf_counter()
            result = run_scripted(
                platform, Region.EU, Script(), rounds=rounds, timeout=600, encrypt=encrypt
            )
            wall = time.perf_counter() - started
            latest = result.backbone_version
            stored = Path(home) / "backbones" / "region-eu" / str(latest) / "backbone.bin"
            size = stored.stat().st_size
        finally:
            platform.close()
    seconds = [entry["seconds"] for entry in result.rounds]
    return {
        "tenants": tenants,
        "rounds": rounds,
        "encrypted": encrypt,
        "participants": [len(e["participants"]) for e in result.rounds],
        "round_s": seconds,
        "median_round_s": median(seconds),
        "wall_s": round(wall, 2),
        "aggregate_bytes": size,
    }
