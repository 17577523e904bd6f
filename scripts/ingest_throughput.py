"""Interactions ingest throughput: rows/s and peak RSS on a synthetic file (not a test).

python scripts/ingest_throughput.py [--rows 1000000] [--runs 3]

Generates one synthetic tenant (`atlasrec.datasets.synthetic`), then per run, in a fresh
process: a new home (SQLite, embedded stores), the items file, then the timed interactions
ingest. Prints each run and the median as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def once(folder: Path, home: Path) -> dict[str, float]:
    """One ingest in this process: seconds, rows/s, peak RSS."""
    from atlasrec.ingest import ingest
    from atlasrec.platform import Platform
    from atlasrec.settings import Settings
    from atlasrec.tenancy import Region, Scope, SharingPolicy

    platform = Platform(Settings(home=home))  # type: ignore[call-arg]
    platform.create_tenant("bench", region=Region.EU, sharing=SharingPolicy.SOLO, actor="bench")
    scope, plane = Scope("bench", Region.EU), platform.plane(Region.EU)
    ingest(plane, scope, secret=platform.secret, actor="bench", items=folder / "items.csv")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    report = ingest(
        plane,
        scope,
        secret=platform.secret,
        actor="bench",
        interactions=folder / "interactions.csv",
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert report.interactions is not None
    platform.close()
    return {
        "rows": report.interactions.rows,
        "written": report.interactions.written,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "load_average": round(os.getloadavg()[0], 2),
        "rows_per_s": round(report.interactions.rows / seconds),
        "peak_rss_mib_before": round(rss_before / 1024, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    """Generate the file once, ingest it `--runs` times in fresh processes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--once", nargs=2, metavar=("FOLDER", "HOME"))
    args = parser.parse_args()
    if args.once:
        print(json.dumps(once(Path(args.once[0]), Path(args.once[1]))))
        return
    from atlasrec.datasets.synthetic import SyntheticTenantSpec, generate_synthetic_tenant
    from atlasrec.tenancy import Region, SharingPolicy

    with tempfile.TemporaryDirectory() as tmp:
        spec = SyntheticTenantSpec(
            "bench", Region.EU, SharingPolicy.SOLO, 100_000, 50_000, args.rows
        )
        folder = generate_synthetic_tenant(spec, Path(tmp) / "data").items_csv.parent
        runs = []
        for k in range(args.runs):
            out = subprocess.run(  # noqa: S603 - this script, fixed arguments
                [sys.executable, __file__, "--once", str(folder), f"{tmp}/home{k}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), file=sys.stderr)
        median = statistics.median(r["rows_per_s"] for r in runs)
        print(json.dumps({"runs": runs, "median_rows_per_s": median}, indent=1))


if __name__ == "__main__":
    main()
