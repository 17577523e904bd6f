"""Model benchmark: quality against baselines, DP against non-DP, DP-SGD cost.

    scripts/bench models [--quick | --only-cost | --seed-study | --ranker-study | --ranker-cost
                          | --neighbours-study]

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

from atlasrec.benchmarks.output import emit
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
    top_k,
)
from atlasrec.models.cooccurrence import EASE_HEAD, Weighting, item_neighbours
from atlasrec.models.popularity import CONTRIBUTION_CAP, item_counts
from atlasrec.models.ranking.features import (
    category_codes,
    cooccurrence_affinity,
    cooccurrence_candidates,
)
from atlasrec.models.ranking.fit import train_with_ranker
from atlasrec.models.ranking.recommender import TwoTowerRankerRecommender
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


def movielens_categories(items_csv: Path) -> list[str | None]:
    """Each item's category: the `category` column, else the first MovieLens genre."""
    with items_csv.open(encoding="utf-8") as fh:
        movies = list(csv.DictReader(fh))
    out: list[str | None] = []
    for m in movies:
        name = m.get("category") or (m.get("genres") or "").split("|")[0]
        out.append(None if not name or name == "(no genres listed)" else name)
    return out


def quality(
    data: Interactions,
    content: np.ndarray,
    epsilons: list[float] | None,
    categories: list[str | None] | None = None,
    dp_repeats: int = 3,
) -> dict[str, Any]:
    """NDCG/Recall@K of baselines and the two-tower model on both splits.

    With `categories`, the two-tower model with its ranker too, on the temporal split. Each
    DP model is trained `dp_repeats` times (training seeds 0, 1, ...; the count release's
    noise is fresh every time); `two_tower_dp_eps<E>` is the median of those runs.
    """
    out = {}
    for split in (temporal_leave_last_out(data), random_user_split(data)):
        recs: dict[str, Recommender] = {
            "popularity": PopScorer(),
            "ease": EASE(),
            "als": ALS(),
            "two_tower": TwoTowerRecommender(content),
        }
        if categories is not None and split.name == "temporal-leave-last-out":
            recs["two_tower+ranker"] = TwoTowerRankerRecommender(
                content, category_codes(categories)
            )
        for eps in epsilons or []:
            for seed in range(dp_repeats):  # DP results vary with the noise: repeat, median
                recs[f"two_tower_dp_eps{eps:g}_seed{seed}"] = TwoTowerRecommender(
                    content, dp_config(TwoTowerConfig(seed=seed)), epsilon=eps, delta=DELTA
                )
        report = evaluate(recs, split, K)
        rows: dict[str, Any] = {
            n: {"ndcg": r["all"]["ndcg"], "recall": r["all"]["recall"], "fit_s": r["fit_seconds"]}
            for n, r in report.items()
        }
        for eps in epsilons or []:
            runs = [rows[f"two_tower_dp_eps{eps:g}_seed{seed}"] for seed in range(dp_repeats)]
            rows[f"two_tower_dp_eps{eps:g}"] = {
                key: statistics.median(float(r[key]) for r in runs)
                for key in ("ndcg", "recall", "fit_s")
            } | {"ndcg_runs": [r["ndcg"] for r in runs]}
        out[split.name] = rows
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


def ranker_study(
    data: Interactions,
    content: np.ndarray,
    categories: list[str | None],
    seeds: list[int],
    split_name: str = "temporal",
) -> dict[str, Any]:
    """Two-tower, with its ranker (next and profile intents; mid-history lists too), EASE."""
    split = temporal_leave_last_out(data) if split_name == "temporal" else random_user_split(data)
    codes = category_codes(categories)
    ease = evaluate({"ease": EASE()}, split, K)["ease"]
    runs = []
    for seed in seeds:
        config = TwoTowerConfig(seed=seed)
        ranked = TwoTowerRankerRecommender(content, codes, config)
        recs: dict[str, Recommender] = {
            "two_tower": TwoTowerRecommender(content, config),
            "two_tower+ranker": ranked,
            "two_tower+ranker, profile intent": ranked.for_intent("profile"),
            "two_tower+ranker(mid-history lists too)": TwoTowerRankerRecommender(
                content, codes, config, mid_history=True
            ),
        }
        report = evaluate(recs, split, K)
        run: dict[str, Any] = {"seed": seed}
        for name, r in report.items():
            run[name] = {
                "ndcg": r["all"]["ndcg"],
                "recall": r["all"]["recall"],
                "fit_s": r["fit_seconds"],
            }
            rec = recs[name]
            if isinstance(rec, TwoTowerRankerRecommender) and rec.fitted is not None:
                run[name]["ranker"] = rec.fitted.lineage
        # the profile intent serves the next intent's fit: its time is that fit's
        run["two_tower+ranker, profile intent"]["fit_s"] = run["two_tower+ranker"]["fit_s"]
        runs.append(run)
    names = [
        "two_tower",
        "two_tower+ranker",
        "two_tower+ranker, profile intent",
        "two_tower+ranker(mid-history lists too)",
    ]
    median = {
        n: {
            "ndcg": statistics.median(float(r[n]["ndcg"]) for r in runs),
            "fit_s": statistics.median(float(r[n]["fit_s"]) for r in runs),
        }
        for n in names
    }
    return {
        "split": split.name,
        "ease": {"ndcg": ease["all"]["ndcg"], "recall": ease["all"]["recall"]},
        "runs": runs,
        "median": median,
        "ndcg_ratio_to_two_tower": {
            n: median[n]["ndcg"] / median["two_tower"]["ndcg"] for n in names
        },
        "fit_ratio_to_two_tower": {
            n: median[n]["fit_s"] / median["two_tower"]["fit_s"] for n in names
        },
    }


class NeighbourScorer:
    """Ranks every unseen item by its item-item neighbours' weights from the user's history.

    `recent=False` sums each history item's row (EASE's own scoring, rows truncated);
    `recent=True` scores by the ranker's `cooccurrence` feature (latest 50, recency-weighted).
    """

    def __init__(self, weighting: Weighting, *, recent: bool, head: int = EASE_HEAD) -> None:
        self.weighting, self.recent, self.head = weighting, recent, head
        self._sequences: list[np.ndarray] = []
        self._neighbours: Any = None

    def fit(self, train_data: Interactions) -> None:
        """Build the neighbours of `train_data`."""
        self._sequences = user_sequences(train_data)
        n_items = train_data.n_items
        self._neighbours = item_neighbours(
            self._sequences, n_items, weighting=self.weighting, head=self.head
        )

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        """Top-k unseen items per user."""
        n_items = self._neighbours.shape[0]
        everything = np.arange(n_items)
        scores = np.zeros((len(users), n_items))
        for row, u in enumerate(users.tolist()):
            seq = self._sequences[u]
            if self.recent:
                scores[row] = cooccurrence_affinity(self._neighbours, seq, everything)
            else:
                scores[row] = np.asarray(self._neighbours[seq].sum(0)).ravel()
            scores[row, seq] = -np.inf
        return top_k(scores, k)


def neighbours_study(data: Interactions) -> dict[str, Any]:
    """Item-item neighbours alone as recommenders (EASE, EASE over heads, cosine), both splits."""
    out: dict[str, Any] = {}
    variants: list[tuple[str, Weighting, int]] = [
        ("ease", "ease", EASE_HEAD),
        ("ease over the 2000 most-interacted items", "ease", 2000),
        ("ease over the 500 most-interacted items", "ease", 500),
        ("cosine", "cosine", EASE_HEAD),
    ]
    for split in (temporal_leave_last_out(data), random_user_split(data)):
        recs: dict[str, Recommender] = {"ease (dense)": EASE()}
        for label, weighting, head in variants:
            for recent, scoring in ((False, "whole history"), (True, "cooccurrence feature")):
                recs[f"{label} neighbours, {scoring}"] = NeighbourScorer(
                    weighting, recent=recent, head=head
                )
        report = evaluate(recs, split, K)
        out[split.name] = {
            n: {"ndcg": r["all"]["ndcg"], "recall": r["all"]["recall"], "fit_s": r["fit_seconds"]}
            for n, r in report.items()
        }
    out["request_cost_ms"] = neighbour_request_cost(data)
    return out


def neighbour_request_cost(data: Interactions, users: int = 200) -> dict[str, Any]:
    """Per-request cost (ms, p50/p99) of the item-item source and of the feature it feeds.

    For `users` users' histories on the EASE neighbours of all `data`: the source's 50
    candidates (`cooccurrence_candidates`, excluding the user's items and 100 others, as
    serving excludes the retrieval head), and the `cooccurrence` feature for 100 candidates
    (the retrieval head alone) and for 150 (the head with the source's).
    """
    everyone = user_sequences(data)
    sequences = [s for s in everyone if len(s)][:users]
    neighbours = item_neighbours(everyone, data.n_items)
    rng = np.random.default_rng(0)
    timings: dict[str, list[float]] = {"candidates_50": [], "feature_100": [], "feature_150": []}
    for seq in sequences:
        head = rng.choice(np.setdiff1d(np.arange(data.n_items), seq), 150, replace=False)
        exclude = np.concatenate([seq, head[:100]])
        started = time.perf_counter()
        cooccurrence_candidates(neighbours, seq, 50, exclude)
        timings["candidates_50"].append((time.perf_counter() - started) * 1000.0)
        for n in (100, 150):
            started = time.perf_counter()
            cooccurrence_affinity(neighbours, seq, head[:n])
            timings[f"feature_{n}"].append((time.perf_counter() - started) * 1000.0)
    return {
        name: {"p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99))}
        for name, t in timings.items()
    } | {"users": len(sequences), "neighbour_entries": int(neighbours.nnz)}


def ranker_cost(
    data: Interactions, content: np.ndarray, categories: list[str | None], repeats: int
) -> dict[str, Any]:
    """Training time on all of `data`: two-tower alone vs with its ranker (as `train --no-dp`).

    Alternated `repeats` times; wall clock and this process's CPU time (less sensitive to
    other load on a shared machine), medians and ratios.
    """
    codes = category_codes(categories)
    config = TwoTowerConfig()
    times: dict[str, dict[str, list[float]]] = {
        n: {"wall_s": [], "cpu_s": []} for n in ("two_tower", "two_tower+ranker")
    }
    ranker: dict[str, Any] = {}
    for _ in range(repeats):
        for name in times:
            wall, cpu = time.perf_counter(), time.process_time()
            if name == "two_tower":
                train(content, user_sequences(data), config)
            else:
                ranker = train_with_ranker(content, codes, data, config).lineage
            times[name]["wall_s"].append(time.perf_counter() - wall)
            times[name]["cpu_s"].append(time.process_time() - cpu)
    median = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    return {
        "runs": times,
        "median": median,
        "ratio": {
            k: median["two_tower+ranker"][k] / median["two_tower"][k] for k in ("wall_s", "cpu_s")
        },
        "last_ranker_lineage": ranker,
    }


def cost_worker(mode: str, epochs: int) -> None:
    """Child process: train the DP architecture privately or not; print epoch times and RSS.

    Epoch 1's time includes the content-only pretraining; the median leaves it out.
    """
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
    if mode != "plain":
        rate, steps = dp_schedule(sum(1 for s in sequences if len(s)), config)
        sigma = calibrate_noise(8.0, DELTA, rate, steps)
        plan = DpPlan(sigma, rate, steps, config.max_grad_norm, DELTA, mode == "dp-secure")
    before = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: measure training alone
    last[0] = time.perf_counter()
    # the same architecture in both modes: the popularity prior on (here exact) counts
    counts = item_counts(sequences, data.n_items, CONTRIBUTION_CAP)
    train(content, sequences, config, dp=plan, popularity=counts, progress=tick)
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


COST_MODES = ("plain", "dp", "dp-secure")


def cost(epochs: int, repeats: int = 3) -> dict[str, Any]:
    """Epoch time and peak memory: non-private, DP, and DP in secure mode, each in a process.

    The modes alternate `repeats` times (the machine is shared and noisy); each round's
    ratios compare median epoch times with its non-private run, and the results are the
    medians over rounds.
    """
    pairs: list[dict[str, Any]] = []
    for _ in range(repeats):
        results = {}
        for mode in COST_MODES:
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
        pairs.append(results)
    epoch = [{m: statistics.median(r["epoch_seconds"]) for m, r in p.items()} for p in pairs]
    return {
        "epoch_s_median": {m: statistics.median(e[m] for e in epoch) for m in COST_MODES},
        "ratio_to_plain": {
            m: statistics.median(e[m] / e["plain"] for e in epoch) for m in COST_MODES
        },
        "ratio_per_pair": [e["dp"] / e["plain"] for e in epoch],
        "secure_ratio_per_round": [e["dp-secure"] / e["plain"] for e in epoch],
        "rss_before_training_mb": {
            m: statistics.median(p[m]["rss_before_mb"] for p in pairs) for m in COST_MODES
        },
        "training_peak_rss_mb": {
            m: statistics.median(p[m]["train_peak_rss_mb"] for p in pairs) for m in COST_MODES
        },
        "epochs_timed": epochs,
        "repeats": repeats,
    }


def _stamped(results: dict[str, Any]) -> dict[str, Any]:
    """`results` after the date and the machine they were measured on."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()} {os.cpu_count()} cores, {host.platform()}",
        **results,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its results as JSON (and write them with --out)."""
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
    parser.add_argument("--split", choices=["temporal", "random"], default="temporal")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dp-repeats", type=int, default=3, help="runs per DP model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5])
    args = parser.parse_args(argv)
    if args.cost_worker:
        cost_worker(args.cost_worker, args.epochs)
        return
    started = time.perf_counter()
    if args.only_cost:
        emit(_stamped(cost(args.epochs, args.repeats)), args.out)
        return
    cache = Path(tempfile.gettempdir()) / "atlasrec-bench-ml-content.npy"
    data, content = movielens(MOVIELENS_DIR / "movies.csv", MOVIELENS_DIR / "ratings.csv", cache)
    categories = movielens_categories(MOVIELENS_DIR / "movies.csv")
    if args.neighbours_study:
        emit(_stamped(neighbours_study(data)), args.out)
        return
    if args.ranker_study:
        emit(_stamped(ranker_study(data, content, categories, args.seeds, args.split)), args.out)
        return
    if args.ranker_cost:
        emit(_stamped(ranker_cost(data, content, categories, args.repeats)), args.out)
        return
    if args.seed_study:
        study = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            **seed_study(data, content, args.seeds, args.shares),
        }
        emit(study, args.out)
        return
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()} {os.cpu_count()} cores, {host.platform()}",
        "k": K,
        "delta": DELTA,
        "movielens": quality(
            data,
            content,
            None if args.quick else [1.0, 4.0, 8.0],
            categories,
            args.dp_repeats,
        ),
        "dp_cost": cost(args.epochs, args.repeats),
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
    emit(results, args.out)


if __name__ == "__main__":
    main()
