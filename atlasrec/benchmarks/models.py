"""Model benchmark: quality against baselines, DP against non-DP, DP-SGD cost.

    scripts/bench models [--quick]

Everything is measured in one run on this machine, side by side: the baselines and the
models share each split; DP and non-private training time the same architecture.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform as host
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from atlasrec.datasets import MOVIELENS_DIR, build_movielens_tenant_mix
from atlasrec.evaluation import (
    ALS,
    EASE,
    Interactions,
    PopScorer,
    Recommender,
    evaluate,
    random_user_split,
    temporal_leave_last_out,
)
from atlasrec.models.recommender import TwoTowerRecommender, user_sequences
from atlasrec.models.text import embed, item_text
from atlasrec.models.training import DpPlan, dp_schedule, train
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import dp_config
from privacy.accounting import calibrate_noise

DELTA = 1e-5
K = 10


def movielens(items_csv: Path, ratings_csv: Path, cache: Path) -> tuple[Interactions, np.ndarray]:
    """Interactions and content embeddings of a MovieLens-format folder."""
    with items_csv.open(encoding="utf-8") as fh:
        movies = list(csv.DictReader(fh))
    key = "movieId" if "movieId" in movies[0] else "item_id"
    index = {m[key]: n for n, m in enumerate(movies)}
    if cache.exists():
        content = np.load(cache)
    else:
        content = embed(
            [
                item_text(
                    m.get("title", ""),
                    (m.get("genres") or m.get("category") or "").replace("|", ", "),
                    m.get("description"),
                )
                for m in movies
            ]
        )
        np.save(cache, content)
    with ratings_csv.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    user_key = "userId" if "userId" in rows[0] else "user_id"
    item_key = "movieId" if "movieId" in rows[0] else "item_id"
    users: dict[str, int] = {}
    u = np.array([users.setdefault(r[user_key], len(users)) for r in rows])
    i = np.array([index[r[item_key]] for r in rows])
    ts = np.array([int(float(r["timestamp"])) for r in rows])
    return Interactions.from_arrays(u, i, ts, n_users=len(users), n_items=len(movies)), content


def quality(
    data: Interactions, content: np.ndarray, epsilons: list[float] | None
) -> dict[str, Any]:
    """NDCG/Recall@K of baselines and the two-tower model on both splits."""
    out = {}
    for split in (temporal_leave_last_out(data), random_user_split(data)):
        recs: dict[str, Recommender] = {
            "popularity": PopScorer(),
            "ease": EASE(),
            "als": ALS(),
            "two_tower": TwoTowerRecommender(content),
        }
        for eps in epsilons or []:
            recs[f"two_tower_dp_eps{eps:g}"] = TwoTowerRecommender(
                content, dp_config(TwoTowerConfig()), epsilon=eps, delta=DELTA
            )
        report = evaluate(recs, split, K)
        out[split.name] = {
            n: {"ndcg": r["all"]["ndcg"], "recall": r["all"]["recall"], "fit_s": r["fit_seconds"]}
            for n, r in report.items()
        }
    return out


def seed_study(
    data: Interactions, content: np.ndarray, seeds: list[int], shares: list[float]
) -> dict[str, Any]:
    """Two-tower NDCG/Recall@K per training seed and `random_share`, on both splits."""
    out: dict[str, Any] = {}
    for split in (temporal_leave_last_out(data), random_user_split(data)):
        for share in shares:
            runs = []
            for seed in seeds:
                config = TwoTowerConfig(seed=seed, random_share=share)
                report = evaluate({"tt": TwoTowerRecommender(content, config)}, split, K)["tt"]
                ndcg, recall = report["all"]["ndcg"], report["all"]["recall"]
                assert ndcg is not None and recall is not None  # "all" always has users
                runs.append({"seed": seed, "ndcg": ndcg, "recall": recall})
            ndcgs = [float(r["ndcg"]) for r in runs]
            out[f"{split.name} random_share={share:g}"] = {
                "runs": runs,
                "ndcg_mean": statistics.mean(ndcgs),
                "ndcg_min": min(ndcgs),
                "ndcg_max": max(ndcgs),
            }
    return out


def cost_worker(mode: str, epochs: int) -> None:
    """Child process: train the DP architecture privately or not; print epoch times and RSS."""
    data, content = movielens(
        MOVIELENS_DIR / "movies.csv",
        MOVIELENS_DIR / "ratings.csv",
        Path(tempfile.gettempdir()) / "atlasrec-bench-ml-content.npy",
    )
    sequences = user_sequences(data)
    config = replace(dp_config(TwoTowerConfig()), epochs=epochs)
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(_epoch: int, _epochs: int, _loss: float) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    plan = None
    if mode == "dp":
        rate, steps = dp_schedule(sum(1 for s in sequences if len(s)), config)
        plan = DpPlan(
            calibrate_noise(8.0, DELTA, rate, steps), rate, steps, config.max_grad_norm, DELTA
        )
    before = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: measure training alone
    last[0] = time.perf_counter()
    train(content, sequences, config, dp=plan, progress=tick)
    print(
        json.dumps(
            {
                "mode": mode,
                "epoch_seconds": times,
                "rss_before_mb": before,
                "train_peak_rss_mb": _rss_mb("VmHWM"),
            }
        )
    )


def _rss_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def cost(epochs: int) -> dict[str, Any]:
    """Epoch time (median) and peak memory, non-private vs DP, each in a fresh process."""
    results = {}
    for mode in ("plain", "dp"):
        run = subprocess.run(  # noqa: S603 - our own module, fixed arguments
            [
                sys.executable,
                "-m",
                "atlasrec.benchmarks.models",
                "--cost-worker",
                mode,
                "--epochs",
                str(epochs),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    median = {m: statistics.median(r["epoch_seconds"]) for m, r in results.items()}
    return {
        "epoch_s_median": median,
        "ratio_to_plain": {m: median[m] / median["plain"] for m in median},
        "rss_before_training_mb": {m: r["rss_before_mb"] for m, r in results.items()},
        "training_peak_rss_mb": {m: r["train_peak_rss_mb"] for m, r in results.items()},
        "epochs_timed": epochs,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its results as JSON (and write them with --out)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-models")
    parser.add_argument("--quick", action="store_true", help="skip DP quality and tenants")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--cost-worker", choices=["plain", "dp"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--only-cost", action="store_true", help="only the DP cost part")
    parser.add_argument("--seed-study", action="store_true", help="two-tower over seeds only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5])
    args = parser.parse_args(argv)
    if args.cost_worker:
        cost_worker(args.cost_worker, args.epochs)
        return
    started = time.perf_counter()
    if args.only_cost:
        print(json.dumps(cost(args.epochs), indent=2))
        return
    cache = Path(tempfile.gettempdir()) / "atlasrec-bench-ml-content.npy"
    data, content = movielens(MOVIELENS_DIR / "movies.csv", MOVIELENS_DIR / "ratings.csv", cache)
    if args.seed_study:
        study = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            **seed_study(data, content, args.seeds, args.shares),
        }
        text = json.dumps(study, indent=2)
        if args.out:
            args.out.write_text(text)
        print(text)
        return
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()} {os.cpu_count()} cores, {host.platform()}",
        "k": K,
        "delta": DELTA,
        "movielens": quality(data, content, None if args.quick else [1.0, 4.0, 8.0]),
        "dp_cost": cost(args.epochs),
    }
    if not args.quick:
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
        results["tenants"] = tenants
    results["total_s"] = time.perf_counter() - started
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
