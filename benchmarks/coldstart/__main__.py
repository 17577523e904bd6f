"""`python -m benchmarks.coldstart`: set up once, run every seed; JSON on stdout (and --out)."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from atlasrec.datasets import build_movielens_tenant_mix
from benchmarks.coldstart.fixtures import CASES, setup
from benchmarks.coldstart.report import case_summary, results
from benchmarks.coldstart.runs import Collected, run_seed
from benchmarks.output import emit


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Set up once; per seed, federate in a fresh copy of the home, then train and evaluate."""
    started = time.perf_counter()
    datasets = {d.tenant_id: d for d in build_movielens_tenant_mix(work / "mix")}
    base, splits = setup(work, datasets)
    collected = Collected({"setup_ingest_embed_s": round(time.perf_counter() - started, 1)})
    for seed in args.seeds:
        run_seed(seed, args, work, base, (datasets, splits), collected)
    cases = {
        c.tenant_id: case_summary(c, datasets[c.tenant_id], splits[c.tenant_id], collected)
        for c in CASES
    }
    return results(args, collected, cases, started)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print the results as JSON (and write them with --out)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-coldstart")
    parser.add_argument("--quick", action="store_true", help="one seed, DP rows only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-epsilon", type=float, default=1.0)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--no-plain", action="store_true", help="skip the rows without DP")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.no_plain = args.seeds[:1], True
    work = Path(tempfile.mkdtemp(prefix="atlasrec-bench-coldstart-"))
    try:
        outcome = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(outcome, args.out)


if __name__ == "__main__":
    main()
