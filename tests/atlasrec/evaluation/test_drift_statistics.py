"""The drift tests and signals: verdicts on known shifts, no verdict on too little data, and
false alarms over unshifted replays of a stationary synthetic tenant (a small version of
`python -m benchmarks.drift`)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from atlasrec.datasets.synthetic import SyntheticTenantSpec, generate_synthetic_tenant
from atlasrec.evaluation.drift import (
    AUC_THRESHOLD,
    INSUFFICIENT,
    categorical_drift,
    embedding_drift,
    numerical_drift,
)
from atlasrec.evaluation.drift_signals import (
    Window,
    activity_levels,
    drift_signals,
    popularity_buckets,
    split_samples,
)
from atlasrec.tenancy import Region, SharingPolicy

RNG = np.random.default_rng(0)


def test_categorical_drift_needs_both_the_effect_and_significance() -> None:
    same = categorical_drift("c", list("ab") * 500, list("ab") * 500)
    assert same.status == "ok" and same.value == pytest.approx(0.0)
    moved = categorical_drift("c", list("ab") * 500, list("a") * 700 + list("b") * 300)
    assert moved.status == "drift" and moved.value is not None and moved.value > 0.1
    slight = categorical_drift("c", list("ab") * 5000, list("a") * 5100 + list("b") * 4900)
    assert slight.p_value is not None and slight.p_value > 0.01 and not slight.drifted
    few = categorical_drift("c", ["a"] * 50, ["b"] * 50)
    assert few.status == INSUFFICIENT and few.value is None and not few.drifted


def test_numerical_and_embedding_drift_find_a_shift_and_not_noise() -> None:
    base = RNG.normal(size=2_000)
    assert numerical_drift("s", base, RNG.normal(size=2_000)).status == "ok"
    assert numerical_drift("s", base, RNG.normal(0.5, 1.0, size=2_000)).status == "drift"
    vectors = RNG.normal(size=(600, 16))
    null = embedding_drift("e", vectors[:300], vectors[300:])
    assert null.status == "ok" and null.value is not None and null.value < AUC_THRESHOLD
    moved = RNG.normal(size=(300, 16)) + np.r_[0.5, np.zeros(15)]
    shifted = embedding_drift("e", vectors[:300], moved)
    assert shifted.status == "drift" and shifted.value is not None and shifted.value > 0.6


def test_popularity_deciles_and_activity_levels() -> None:
    items = np.asarray(["a"] * 50 + ["b"] * 30 + ["c"] * 20, dtype=object)
    assert popularity_buckets(items) == {"a": 0, "b": 5, "c": 8}
    users = np.asarray(["u"] * 5 + ["v"] + ["w"] * 70, dtype=object)
    assert sorted(activity_levels(Window(users, users))) == [0, 2, 6]


class MeanEncoder:
    """User vectors: the mean of fixed random item vectors (a stand-in for the user tower)."""

    def __init__(self, items: Sequence[str]) -> None:
        rng = np.random.default_rng(1)
        self.vectors_of = {item: rng.normal(size=16) for item in items}

    def vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        pooled = np.array([np.mean([self.vectors_of[i] for i in h], axis=0) for h in histories])
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def top_scores(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors.max(axis=1))


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Window, dict[str, str | None]]:
    spec = SyntheticTenantSpec(
        "drift", Region.EU, SharingPolicy.SOLO, n_items=2_000, n_users=2_000, n_interactions=95_000
    )
    data = generate_synthetic_tenant(spec, tmp_path_factory.mktemp("drift"))
    with Path(data.interactions_csv).open(newline="") as f:
        rows = list(csv.DictReader(f))
    with Path(data.items_csv).open(newline="") as f:
        categories = {r["item_id"]: r["category"] or None for r in csv.DictReader(f)}
    users = np.asarray([r["user_id"] for r in rows], dtype=object)
    return Window(users, np.asarray([r["item_id"] for r in rows], dtype=object)), categories


def _check(stream: tuple[Window, dict[str, str | None]], index: int, surge: float) -> list[str]:
    rows, categories = stream
    training, size = rows.head(30_000), 1_500
    first = Window(rows.users[30_000:31_500], rows.items[30_000:31_500])
    start = 30_000 + index * size
    last = Window(rows.users[start : start + size], rows.items[start : start + size].copy())
    if surge:
        rng = np.random.default_rng(index)
        pool = [i for i, c in categories.items() if c == min(filter(None, categories.values()))]
        moved = rng.random(size) < surge
        last.items[moved] = rng.choice(np.asarray(pool, dtype=object), int(moved.sum()))
    samples = split_samples(training, first, last, cap=20_000)
    signals = drift_signals(samples, categories, MeanEncoder(list(categories)), seed=index)
    assert all(s.value is not None for s in signals)  # enough data for every verdict
    return [s.signal for s in signals if s.drifted]


def test_unshifted_replays_rarely_alarm_and_a_category_surge_is_found(
    stream: tuple[Window, dict[str, str | None]],
) -> None:
    alarms = sum(bool(_check(stream, index, 0.0)) for index in range(1, 41))
    assert alarms <= 2  # at most 5% of 40 replays
    found = [_check(stream, index, 0.2) for index in range(1, 11)]
    assert all("category_mix" in drifted for drifted in found)
