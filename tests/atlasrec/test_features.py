"""The ranking features' definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from atlasrec.features import (
    AFFINITY_HISTORY,
    NO_CATEGORY,
    RECENCY_SCALE_S,
    UNKNOWN_ITEM,
    ItemStats,
    category_affinity,
    cooccurrence_affinity,
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
