"""Model quality on MovieLens splits: baselines, two-tower (DP too), ranker, neighbours."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

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
from atlasrec.models.ranking.features import (
    category_codes,
    cooccurrence_affinity,
    cooccurrence_candidates,
)
from atlasrec.models.ranking.recommender import TwoTowerRankerRecommender
from atlasrec.models.recommender import TwoTowerRecommender, user_sequences
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import dp_config
from benchmarks.models.fixtures import DELTA, K
from benchmarks.stats import median, p50_p99


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
                key: median(float(r[key]) for r in runs) for key in ("ndcg", "recall", "fit_s")
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
    medians = {
        n: {
            "ndcg": median(float(r[n]["ndcg"]) for r in runs),
            "fit_s": median(float(r[n]["fit_s"]) for r in runs),
        }
        for n in names
    }
    return {
        "split": split.name,
        "ease": {"ndcg": ease["all"]["ndcg"], "recall": ease["all"]["recall"]},
        "runs": runs,
        "median": medians,
        "ndcg_ratio_to_two_tower": {
            n: medians[n]["ndcg"] / medians["two_tower"]["ndcg"] for n in names
        },
        "fit_ratio_to_two_tower": {
            n: medians[n]["fit_s"] / medians["two_tower"]["fit_s"] for n in names
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
    return {name: p50_p99(t, digits=None) for name, t in timings.items()} | {
        "users": len(sequences),
        "neighbour_entries": int(neighbours.nnz),
    }
