"""`python -m benchmarks.federation`: run the measurements; JSON on stdout (and in --out)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.federation.aggregation import encrypted_aggregation, parameter_sweep
from benchmarks.federation.fixtures import (
    PARAMETERS,
    REPEATS,
    SWEEP,
    TARGET_ROUND_S,
    TARGET_TENANTS,
    TENANTS,
)
from benchmarks.federation.flower import flower_rounds
from benchmarks.federation.report import flower_line, summary, target_line
from benchmarks.output import emit
from benchmarks.stamp import stamp, versions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options: what to measure, and at which sizes."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-federation")
    parser.add_argument("--quick", action="store_true", help="10,000 parameters, 3 repeats")
    parser.add_argument("--sweep", action="store_true", help="compare CKKS parameter sets")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument(
        "--flower-rounds",
        type=int,
        default=0,
        help="also run this many full Flower rounds per tenant count, encrypted and plaintext",
    )
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--parameters", type=int, default=PARAMETERS)
    parser.add_argument("--tenants", type=int, nargs="+", default=list(TENANTS))
    return parser.parse_args(argv)


def aggregation(tenants: list[int], parameters: int, repeats: int) -> dict[str, Any]:
    """`encrypted_aggregation` per tenant count, and the target when its size is measured."""
    out: dict[str, Any] = {"encrypted_aggregation": []}
    for count in tenants:
        result = encrypted_aggregation(count, parameters, repeats)
        out["encrypted_aggregation"].append(result)
        print(summary(result), file=sys.stderr)
        if count == TARGET_TENANTS and parameters == PARAMETERS:
            out["target"] = {
                "tenants": TARGET_TENANTS,
                "parameters": PARAMETERS,
                "max_round_s": TARGET_ROUND_S,
                "median_round_s": result["aggregator_round_s"],
                "met": result["aggregator_round_s"] <= TARGET_ROUND_S,
            }
            print(target_line(out["target"]), file=sys.stderr)
    return out


def flower(tenants: list[int], rounds: int) -> list[dict[str, Any]]:
    """Full Flower rounds per tenant count, plaintext then encrypted."""
    out = []
    for count in tenants:
        for encrypt in (False, True):
            result = flower_rounds(count, rounds, encrypt=encrypt)
            out.append(result)
            print(flower_line(result), file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmarks and print their results as JSON (and write them with --out)."""
    args = parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    parameters = 10_000 if args.quick else args.parameters
    started = time.perf_counter()
    results: dict[str, Any] = {
        **stamp(),
        "versions": versions(("tenseal", "numpy")),
        "load_average_start": os.getloadavg(),
    }
    if args.sweep:
        results["sweep"] = parameter_sweep(SWEEP, max(args.tenants), parameters, repeats)
        for result in results["sweep"]:
            print(summary(result), file=sys.stderr)
    else:
        results.update(aggregation(args.tenants, parameters, repeats))
    if args.flower_rounds:
        results["flower_rounds"] = flower(args.tenants, args.flower_rounds)
    results["load_average_end"] = os.getloadavg()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    emit(results, args.out)


if __name__ == "__main__":
    main()
