"""Fit recommenders on a split's train log and score their top-k lists on its test users."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from atlasrec.errors import InvalidInputError
from atlasrec.evaluation.baselines import Recommender
from atlasrec.evaluation.data import IntArray
from atlasrec.evaluation.metrics import coverage_at_k, map_at_k, ndcg_at_k, recall_at_k
from atlasrec.evaluation.splits import Split


class GroupReport(TypedDict):
    """Mean metrics over one group of test users (``None`` when the group is empty)."""

    recall: float | None
    ndcg: float | None
    map: float | None
    coverage: float | None
    users: int


class RecommenderReport(TypedDict):
    """One recommender's results: all test users, the cold and warm subsets, timings."""

    all: GroupReport
    cold: GroupReport
    warm: GroupReport
    fit_seconds: float
    recommend_seconds: float


def evaluate(
    recommenders: Mapping[str, Recommender], split: Split, k: int, *, cold_max: int = 5
) -> dict[str, RecommenderReport]:
    """Fit each recommender on ``split.train`` and report its metrics at ``k`` on ``split.test``.

    Per recommender (in the mapping's order): ``all``, ``cold`` and ``warm`` groups, each with
    the mean ``recall``, ``ndcg`` and ``map`` over its users (see `atlasrec.evaluation.metrics`),
    the catalog ``coverage`` of its users' lists and its ``users`` count. "cold" users are the
    tested users with at most ``cold_max`` distinct items in train, "warm" the others. Also
    ``fit_seconds`` and ``recommend_seconds`` (wall clock). All values are plain ints, floats or
    ``None``, so the result is JSON-serialisable; apart from the timings it is deterministic
    for deterministic recommenders. Raises `InvalidInputError` if ``k < 1``, ``cold_max < 0``
    or a recommender returns a malformed list or one holding a train item of its user.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"k must be an int >= 1, got {k!r}")
    if isinstance(cold_max, bool) or not isinstance(cold_max, int) or cold_max < 0:
        raise InvalidInputError(f"cold_max must be an int >= 0, got {cold_max!r}")
    train = split.train
    users = split.test_users()
    truth = split.truth(users)
    cold = train.user_counts(distinct=True)[users] <= cold_max
    groups = {"all": np.ones(users.size, dtype=bool), "cold": cold, "warm": ~cold}
    train_keys = np.unique(train.pair_keys())

    report: dict[str, RecommenderReport] = {}
    for name, recommender in recommenders.items():
        start = time.perf_counter()
        recommender.fit(train)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ranked = np.asarray(recommender.recommend(users, k))
        recommend_seconds = time.perf_counter() - start
        _check_ranked(name, ranked, users, k, train.n_items, train_keys)
        per_user = {
            "recall": recall_at_k(ranked, truth, k) if users.size else np.zeros(0),
            "ndcg": ndcg_at_k(ranked, truth, k) if users.size else np.zeros(0),
            "map": map_at_k(ranked, truth, k) if users.size else np.zeros(0),
        }
        out = {
            group: _group(per_user, ranked, mask, train.n_items) for group, mask in groups.items()
        }
        report[name] = {
            "all": out["all"],
            "cold": out["cold"],
            "warm": out["warm"],
            "fit_seconds": float(fit_seconds),
            "recommend_seconds": float(recommend_seconds),
        }
    return report


def _group(
    per_user: Mapping[str, npt.NDArray[np.float64]],
    ranked: IntArray,
    mask: npt.NDArray[np.bool_],
    n_items: int,
) -> GroupReport:
    n = int(mask.sum())
    if n == 0:
        return {"recall": None, "ndcg": None, "map": None, "coverage": None, "users": 0}
    return {
        "recall": float(per_user["recall"][mask].mean()),
        "ndcg": float(per_user["ndcg"][mask].mean()),
        "map": float(per_user["map"][mask].mean()),
        "coverage": coverage_at_k(ranked[mask], n_items) if n_items else 0.0,
        "users": n,
    }


def _check_ranked(
    name: str, ranked: IntArray, users: IntArray, k: int, n_items: int, train_keys: IntArray
) -> None:
    if ranked.shape != (users.size, k) or (ranked.size and ranked.dtype.kind not in "iu"):
        raise InvalidInputError(
            f"{name}: recommend() returned shape {ranked.shape} dtype {ranked.dtype}, "
            f"expected ({users.size}, {k}) integers"
        )
    if ranked.size and (int(ranked.min()) < -1 or int(ranked.max()) >= n_items):
        raise InvalidInputError(f"{name}: recommend() returned items outside [-1, {n_items})")
    keys = users[:, None] * np.int64(n_items) + ranked.astype(np.int64)
    leaked = np.isin(keys, train_keys) & (ranked >= 0)
    if leaked.any():
        raise InvalidInputError(
            f"{name}: recommend() returned {int(leaked.sum())} items from the users' train data"
        )
