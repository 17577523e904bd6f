"""`python -m benchmarks.chaos`: a region's real processes under faults, new code and baseline.

For each code version: private PostgreSQL, Redis and JetStream servers; one region with two
serving processes and a consumer process; open-loop traffic (recommendations, events,
catalog upserts) with client-side failover; then, in turn, kill -9 of a serving process,
PostgreSQL stopped, Redis killed, the artifact disk full. Each fault is followed by a calm
phase. At the end every acknowledged write is looked up where it should have landed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from atlasrec.datasets.synthetic import SyntheticTenantSpec, generate_synthetic_tenant
from atlasrec.tenancy import Region as RegionName
from atlasrec.tenancy import SharingPolicy
from benchmarks.chaos.cluster import REGION, TENANT, Region, users
from benchmarks.chaos.faults import FAULTS
from benchmarks.chaos.report import lost_writes, summary
from benchmarks.chaos.services import Nats, Postgres, Redis, wait_until
from benchmarks.chaos.traffic import RATES, Traffic
from benchmarks.events.fixtures import item_ids
from benchmarks.stamp import stamp

REPO = Path(__file__).resolve().parents[2]
BASELINE_COMMIT = "4c5c197"
"""main before the chaos work: the same suite on the code it changed."""


def catalog(work: Path) -> tuple[Path, Path]:
    """A small synthetic tenant (fast to embed and train)."""
    spec = SyntheticTenantSpec(
        TENANT, RegionName(REGION), SharingPolicy.SOLO, 300, 200, 3_000, seed=7
    )
    ds = generate_synthetic_tenant(spec, work)
    return ds.items_csv, ds.interactions_csv


def run_variant(
    name: str, code: Path, work: Path, files: tuple[Path, Path], hold_s: float, calm_s: float
) -> dict[str, Any]:
    """The whole suite on one code version."""
    with ExitStack() as stack:
        pg = Postgres()
        stack.callback(pg.close)
        redis, nats = Redis(work / "redis"), Nats(work / "nats")
        stack.callback(redis.close)
        stack.callback(nats.close)
        region = Region(name, code, work, pg, redis, nats)
        stack.callback(region.stop)
        region.mount_artifact_disk()
        region.prepare(*files)
        region.start(servers=2)
        traffic = Traffic(region.ports, region.api_key, users(files[1]), item_ids(files[0]))
        traffic.start()
        time.sleep(calm_s)
        faults: dict[str, Any] = {}
        for fault_name, fault in FAULTS.items():
            traffic.phase = fault_name
            faults[fault_name] = fault(region, traffic, hold_s)
            traffic.phase = f"after {fault_name}"
            time.sleep(calm_s)
        tally = traffic.stop()
        drained = wait_until(lambda: _drained(region), 300, step_s=1.0)
        return {
            "faults": faults,
            "phases": summary(tally),
            "lost": lost_writes(region, tally),
            "consumers_drained_s": None if drained is None else round(drained, 1),
        }


def _drained(region: Region) -> bool:
    """Whether every consumer of the region's log has caught up."""
    code, output = region.cli("events", "stats", "--tenant", TENANT, "--json")
    if code:
        return False
    stats = json.loads(output[output.index("{") :])
    return all(lag == 0 for lag in stats["consumers"].values())


def main() -> None:
    """Run the suite on the new code and the baseline; print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="shorter faults and calm phases")
    parser.add_argument("--baseline", default=BASELINE_COMMIT)
    parser.add_argument("--only-new", action="store_true")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep the logs")
    args = parser.parse_args()
    hold_s, calm_s = (8.0, 5.0) if args.quick else (20.0, 10.0)
    results: dict[str, Any] = {
        **stamp(),
        "config": {
            "hold_s": hold_s,
            "calm_s": calm_s,
            "rates_per_s": RATES,
            "baseline": args.baseline,
            "serving_processes": 2,
        },
        "variants": {},
    }
    with tempfile.TemporaryDirectory(prefix="atlasrec-chaos-") as tmp:
        work = args.keep or Path(tmp)
        files = catalog(work / "catalog")
        variants = [("new", REPO)]
        if not args.only_new:
            base = work / "baseline-code"
            subprocess.run(  # noqa: S603 - git, fixed arguments
                ["/usr/bin/git", "worktree", "add", "--detach", "-f", str(base), args.baseline],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
            variants.append(("baseline", base))
        try:
            for name, code in variants:
                results["variants"][name] = run_variant(
                    name, code, work / name, files, hold_s, calm_s
                )
        finally:
            if not args.only_new:
                subprocess.run(  # noqa: S603 - git, fixed arguments
                    ["/usr/bin/git", "worktree", "remove", "--force", str(work / "baseline-code")],
                    cwd=REPO,
                    check=False,
                    capture_output=True,
                )
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
