"""The time of one non-DP fit of a synthetic tenant, and what it scores (the training target).

`python -m benchmarks.models.fit_time [--users N]`: a synthetic retail tenant of N users
(`default_order.synthetic`, default 100,000), its temporal leave-last-out split (at most
`MAX_TEST_USERS` tested users), popularity and EASE on it, and one
`TwoTowerRankerRecommender` fit (what `atlasrec train --no-dp` fits: three trainings, the
ranker, the default order's validation, the EASE profile) with its wall and CPU seconds and
the NDCG@10 of each order (`default_order.seed_run`); with `--dp-epsilon E`, instead one fit
of what `atlasrec train --epsilon E` fits (`default_order.dp_run`: the count, Gram and
validation releases, DP-SGD and the floor's choice) with its wall and CPU seconds and NDCG@10.
The target: a 100K-user tenant trains in under 30 minutes. JSON on stdout (and in `--out`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from atlasrec.evaluation import EASE, PopScorer, evaluate, temporal_leave_last_out
from atlasrec.models.two_tower import TwoTowerConfig
from benchmarks.models.default_order import dp_run, sampled, seed_run, synthetic
from benchmarks.models.fixtures import K
from benchmarks.output import emit
from benchmarks.stamp import stamp


def fit_time(n_users: int, dp_epsilon: float | None = None) -> dict[str, Any]:
    """The study (see the module docstring)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ds = synthetic(f"synthetic-{n_users}", n_users, Path(tmp))
    generated = time.perf_counter() - started
    split = sampled(temporal_leave_last_out(ds.data))
    baselines = evaluate({"popularity": PopScorer(), "ease": EASE()}, split, K)
    if dp_epsilon is None:
        fit = seed_run(ds, split, TwoTowerConfig())
    else:
        wall, cpu = time.perf_counter(), time.process_time()
        fit = dp_run(ds, split, TwoTowerConfig(), dp_epsilon)
        fit["fit_and_score_s"] = round(time.perf_counter() - wall, 2)
        fit["fit_and_score_cpu_s"] = round(time.process_time() - cpu, 2)
    return {
        **stamp(),
        "users": ds.data.n_users,
        "items": ds.data.n_items,
        "interactions": len(ds.data),
        "generate_s": round(generated, 1),
        "baselines_ndcg": {n: r["all"]["ndcg"] for n, r in baselines.items()},
        "dp_epsilon": dp_epsilon,
        "fit": fit,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the study and print its JSON."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-fit-time")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dp-epsilon", type=float, help="time a DP run at this epsilon")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    emit(fit_time(args.users, args.dp_epsilon), args.out)


if __name__ == "__main__":
    main()
