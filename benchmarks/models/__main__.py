"""`python -m benchmarks.models`: run the chosen part; JSON on stdout (and in --out)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from atlasrec.datasets import MOVIELENS_DIR, build_movielens_tenant_mix
from atlasrec.evaluation import Interactions
from benchmarks.models.cost import COST_MODES, cost, cost_worker, ranker_cost
from benchmarks.models.default_order import DATASETS, DEFAULT_DATASETS, default_order_study
from benchmarks.models.fixtures import DELTA, K, full_movielens, movielens, movielens_categories
from benchmarks.models.quality import neighbours_study, quality, ranker_study, seed_study
from benchmarks.output import emit
from benchmarks.stamp import now, stamp


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options: which part to run, and its sizes."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-models")
    parser.add_argument("--quick", action="store_true", help="skip DP quality and tenants")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--cost-worker", choices=COST_MODES)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--only-cost", action="store_true", help="only the DP cost part")
    parser.add_argument("--seed-study", action="store_true", help="two-tower over seeds only")
    parser.add_argument("--ranker-study", action="store_true", help="ranker over seeds only")
    parser.add_argument("--ranker-cost", action="store_true", help="training time with ranker")
    parser.add_argument("--neighbours-study", action="store_true", help="item-item weights")
    parser.add_argument(
        "--default-order", action="store_true", help="default order vs baselines, by data set"
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DEFAULT_DATASETS))
    parser.add_argument(
        "--dp-epsilon", type=float, help="--default-order: also what train --epsilon publishes"
    )
    parser.add_argument("--dp-only", action="store_true", help="--default-order: DP runs alone")
    parser.add_argument("--split", choices=["temporal", "random"], default="temporal")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dp-repeats", type=int, default=3, help="runs per DP model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5])
    return parser.parse_args(argv)


def tenant_quality() -> dict[str, Any]:
    """Baselines and two-tower on each tenant of the demo mix."""
    tenants = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ds in build_movielens_tenant_mix(Path(tmp)):
            t_data, t_content = movielens(
                ds.items_csv, ds.interactions_csv, Path(tmp) / f"{ds.tenant_id}.npy"
            )
            tenants[ds.tenant_id] = {
                "users": ds.n_users,
                "items": ds.n_items,
                **quality(t_data, t_content, None),
            }
    return tenants


def full_run(
    args: argparse.Namespace, data: Interactions, content: np.ndarray, started: float
) -> dict[str, Any]:
    """Quality on MovieLens (DP too unless --quick), DP cost, and (unless --quick) tenants."""
    categories = movielens_categories(MOVIELENS_DIR / "movies.csv")
    epsilons = None if args.quick else [1.0, 4.0, 8.0]
    results: dict[str, Any] = {
        **stamp(),
        "k": K,
        "delta": DELTA,
        "movielens": quality(data, content, epsilons, categories, args.dp_repeats),
        "dp_cost": cost(args.epochs, args.repeats),
    }
    if not args.quick:
        results["tenants"] = tenant_quality()
    results["total_s"] = time.perf_counter() - started
    return results


def study(
    args: argparse.Namespace, data: Interactions, content: np.ndarray
) -> dict[str, Any] | None:
    """The one study the options ask for (stamped); None when they ask for the full run."""
    categories = movielens_categories(MOVIELENS_DIR / "movies.csv")
    if args.neighbours_study:
        return {**stamp(), **neighbours_study(data)}
    if args.ranker_study:
        return {**stamp(), **ranker_study(data, content, categories, args.seeds, args.split)}
    if args.ranker_cost:
        return {**stamp(), **ranker_cost(data, content, categories, args.repeats)}
    if args.seed_study:
        return {"date": now(), **seed_study(data, content, args.seeds, args.shares)}
    return None


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its results as JSON (and write them with --out)."""
    args = parse_args(argv)
    if args.cost_worker:
        cost_worker(args.cost_worker, args.epochs)
        return
    started = time.perf_counter()
    if args.only_cost:
        emit({**stamp(), **cost(args.epochs, args.repeats)}, args.out)
        return
    if args.default_order:
        order = default_order_study(args.datasets, args.seeds, args.dp_epsilon, args.dp_only)
        emit(order | {"total_s": round(time.perf_counter() - started, 1)}, args.out)
        return
    data, content = full_movielens()
    results = study(args, data, content)
    if results is None:
        results = full_run(args, data, content, started)
    emit(results, args.out)


if __name__ == "__main__":
    main()
