"""The ranking features' definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atlasrec.features import (
    AFFINITY_HISTORY,
    NO_CATEGORY,
    RECENCY_SCALE_S,
    ItemStats,
    category_affinity,
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
    features = ranking_features(np.array([0.5, 0.25]), np.array([0, 1]), [1], stats, now)
    assert features.dtype == np.float32
    assert features[:, 0].tolist() == [0.5, 0.25]
    assert features[:, 1] == pytest.approx([0.0, math.log(10.0)])
    assert features[:, 2] == pytest.approx([0.0, math.exp(-1.0)])
    assert features[:, 3].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="length"):
        ranking_features(np.array([0.5]), np.array([0, 1]), [], stats, now)
