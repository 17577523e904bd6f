"""The ranking features' definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.models.ranking import features
from atlasrec.models.ranking.features import (
    AFFINITY_HISTORY,
    NO_CATEGORY,
    RECENCY_SCALE_S,
    UNKNOWN_ITEM,
    ItemStats,
    category_affinity,
    cooccurrence_affinity,
    cooccurrence_candidates,
    cooccurrence_profile,
    history_profile,
    ranking_features,
)


def test_category_affinity_weighs_recent_items_more() -> None:
    # history oldest first: two of category 0, then one of category 1 (the newest)
    affinity = category_affinity([0, 0, 1], np.array([0, 1, 2, NO_CATEGORY]))
    w = [0.5 ** (2 / 10), 0.5 ** (1 / 10), 1.0]
    assert affinity == pytest.approx([(w[0] + w[1]) / sum(w), w[2] / sum(w), 0.0, 0.0])
    assert category_affinity([], np.array([0])).tolist() == [0.0]
    assert category_affinity([NO_CATEGORY], np.array([0])).tolist() == [0.0]


def test_only_the_latest_history_counts() -> None:
    old = [1] * 30
    recent = [0] * AFFINITY_HISTORY
    assert category_affinity(old + recent, np.array([0, 1])) == pytest.approx([1.0, 0.0])


def test_feature_columns() -> None:
    now = 1_000_000.0
    stats = ItemStats(np.array([0.0, 9.0]), np.array([np.nan, now - RECENCY_SCALE_S]))
    cooccurrence = np.array([0.0, 0.75])
    features = ranking_features(
        np.array([0.5, 0.25]), np.array([0, 1]), [1], stats, now, cooccurrence
    )
    assert features.dtype == np.float32
    assert features[:, 0].tolist() == [0.5, 0.25]
    assert features[:, 1] == pytest.approx([0.0, math.log(10.0)])
    assert features[:, 2] == pytest.approx([0.0, math.exp(-1.0)])
    assert features[:, 3].tolist() == [0.0, 1.0]
    assert features[:, 4].tolist() == [0.0, 0.75]
    with pytest.raises(ValueError, match="length"):
        ranking_features(np.array([0.5]), np.array([0, 1]), [], stats, now, cooccurrence)
    with pytest.raises(ValueError, match="length"):
        ranking_features(np.array([0.5, 0.25]), np.array([0, 1]), [], stats, now, np.zeros(3))


def test_cooccurrence_affinity_is_the_recency_weighted_mean_over_the_history() -> None:
    # items 0..3; item 0 co-occurs with 2 (0.5) and 3 (0.25), item 1 with 2 (1.0)
    neighbours = sp.csr_matrix(
        (np.array([0.5, 0.25, 1.0]), (np.array([0, 0, 1]), np.array([2, 3, 2]))), shape=(4, 4)
    )
    w = [0.5 ** (2 / 10), 0.5 ** (1 / 10), 1.0]  # history oldest first: 0, unknown, 1
    got = cooccurrence_affinity(neighbours, [0, UNKNOWN_ITEM, 1], np.array([2, 3, UNKNOWN_ITEM]))
    assert got == pytest.approx([(0.5 * w[0] + 1.0 * w[2]) / sum(w), 0.25 * w[0] / sum(w), 0.0])
    assert cooccurrence_affinity(None, [0, 1], np.array([2])).tolist() == [0.0]
    assert cooccurrence_affinity(neighbours, [], np.array([2])).tolist() == [0.0]
    assert cooccurrence_affinity(neighbours, [UNKNOWN_ITEM], np.array([2])).tolist() == [0.0]
    old = [0] * 30  # beyond the latest AFFINITY_HISTORY entries: ignored
    assert cooccurrence_affinity(neighbours, old + [1] * AFFINITY_HISTORY, np.array([3])) == [0]


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(-1, 19), max_size=60),
    st.lists(st.integers(0, 19), max_size=5),
    st.integers(1, 8),
)
def test_cooccurrence_candidates_are_the_best_unseen_rows_by_the_feature(
    seed: int, history: list[int], exclude: list[int], n: int
) -> None:
    rng = np.random.default_rng(seed)
    dense = rng.uniform(0.0, 1.0, (20, 20)) * (rng.random((20, 20)) < 0.3)
    neighbours = sp.csr_matrix(dense.astype(np.float32))
    got = cooccurrence_candidates(neighbours, history, n, exclude)
    # brute force, dense: the feature of every row, then the best positive unseen ones
    latest = np.array(history[-AFFINITY_HISTORY:], dtype=np.int64)
    weights = 0.5 ** (np.arange(len(latest) - 1, -1, -1) / 10.0)
    known = latest != UNKNOWN_ITEM
    rows = neighbours.toarray().astype(np.float64)[latest[known]]
    feature = weights[known] @ rows / max(weights.sum(), 1e-12)
    np.testing.assert_allclose(cooccurrence_affinity(neighbours, history, np.arange(20)), feature)
    window = [i for i in history[-AFFINITY_HISTORY:] if i != UNKNOWN_ITEM]
    allowed = [r for r in range(20) if feature[r] > 0 and r not in window + exclude]
    best = sorted(allowed, key=lambda r: (-feature[r], r))[:n]
    assert len(got) == len(best) and len(set(got.tolist())) == len(got)
    assert not set(got.tolist()) & set(window + exclude)
    np.testing.assert_allclose(feature[got], feature[best], rtol=1e-5)


def test_cooccurrence_candidates_without_neighbours_or_history_are_none() -> None:
    neighbours = sp.csr_matrix(np.ones((3, 3), dtype=np.float32))
    assert cooccurrence_candidates(None, [0], 5).size == 0
    assert cooccurrence_candidates(neighbours, [], 5).size == 0
    assert cooccurrence_candidates(neighbours, [UNKNOWN_ITEM], 5).size == 0
    assert cooccurrence_candidates(neighbours, [0], 0).size == 0
    assert cooccurrence_candidates(neighbours, [0], 5).tolist() == [1, 2]


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(-1, 19), max_size=40),
    st.integers(1, 12),
)
def test_the_history_profile_is_the_plain_mean_of_the_latest_rows(
    seed: int, history: list[int], window: int
) -> None:
    rng = np.random.default_rng(seed)
    dense = rng.uniform(0.0, 1.0, (20, 20)) * (rng.random((20, 20)) < 0.3)
    neighbours = sp.csr_matrix(dense.astype(np.float32))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features, "PROFILE_HISTORY", window)
        got = history_profile(neighbours, history).affinity(np.arange(20))
    latest = np.array(history[-window:], dtype=np.int64)  # unknown entries: denominator only
    rows = neighbours.toarray().astype(np.float64)[latest[latest != UNKNOWN_ITEM]]
    expected = rows.sum(0) / len(latest) if len(rows) else np.zeros(20)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


def test_a_profile_window_must_hold_an_item() -> None:
    neighbours = sp.csr_matrix(np.ones((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="window must be >= 1"):
        cooccurrence_profile(neighbours, [0], window=0)
