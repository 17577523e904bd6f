"""CSV ingest: `atlasrec ingest --interactions` of synthetic files, new code against baseline.

Each run gets a fresh tenant (its catalog ingested first, not timed); the timed run is the
interactions file alone, as its own process: wall time, rows/s, its peak RSS (`wait4`).
Each size is ingested `repeats` times per variant, the variants alternating which goes
first; a size's result is the median of its runs (`median_of`), with the runs' rows/s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atlasrec.datasets.synthetic import SyntheticTenantSpec, generate_synthetic_tenant
from atlasrec.tenancy import Region, SharingPolicy
from benchmarks.events.config import REGION
from benchmarks.events.fixtures import create_tenant, ingest
from benchmarks.events.processes import Home
from benchmarks.stats import median_of

INGEST_ITEMS = 20_000
INGEST_USERS = 100_000


def files(
    work: Path, sizes: Sequence[int], n_items: int = INGEST_ITEMS
) -> dict[int, tuple[Path, Path, float]]:
    """Synthetic tenant files per size: (items.csv, interactions.csv, generation seconds)."""
    out = {}
    for size in sizes:
        started = time.perf_counter()
        spec = SyntheticTenantSpec(
            f"ing{size}",
            Region(REGION),
            SharingPolicy.SOLO,
            n_items,
            min(INGEST_USERS, size // 5),
            size,
            seed=size,
        )
        ds = generate_synthetic_tenant(spec, work)
        out[size] = (ds.items_csv, ds.interactions_csv, time.perf_counter() - started)
    return out


def ingest_runs(
    homes: Sequence[Home],
    work: Path,
    sizes: Sequence[int],
    n_items: int = INGEST_ITEMS,
    repeats: int = 1,
) -> dict[str, Any]:
    """Each size ingested `repeats` times by each variant; medians of rows/s and peak RSS."""
    made = files(work, sizes, n_items)
    out: dict[str, Any] = {h.variant.name: {} for h in homes}
    turn = 0
    for size in sizes:
        items, interactions, generated = made[size]
        mb = interactions.stat().st_size / 1e6
        print(f"  {size:,} interactions ({mb:.0f} MB, generated in {generated:.1f} s)", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {h.variant.name: [] for h in homes}
        for rep in range(repeats):
            for home in homes if turn % 2 == 0 else list(reversed(homes)):
                tenant = f"ing{size // 1000}k-{rep}"
                runs[home.variant.name].append(_run(home, tenant, items, interactions, size, mb))
            turn += 1
        for name, done in runs.items():
            out[name][str(size)] = {
                **median_of(done),
                "repeats": len(done),
                "runs_rows_per_s": [r["rows_per_s"] for r in done],
                "output": done[-1]["output"],
            }
        for path in (items, interactions):
            path.unlink()
    return out


def _run(
    home: Home, tenant: str, items: Path, interactions: Path, size: int, mb: float
) -> dict[str, Any]:
    """One timed ingest of `interactions` into a fresh tenant (catalog ingested first)."""
    create_tenant(home, tenant)
    catalog = ingest(home, tenant, items, None)
    done = ingest(home, tenant, None, interactions)
    result = {
        **done.as_dict(),
        "rows": size,
        "csv_mb": round(mb, 1),
        "rows_per_s": round(size / done.seconds, 1),
        "catalog_ingest_s": round(catalog.seconds, 2),
        "output": done.output.strip()[-300:],
    }
    print(
        f"    {home.variant.name:<13} {result['seconds']} s, "
        f"{result['rows_per_s']:,} rows/s, peak RSS {result['peak_rss_mb']} MB",
        flush=True,
    )
    return result
