"""Re-ranking and the policy filter as components: rules, diversity, batch = one per list."""

from __future__ import annotations

import numpy as np

from atlasrec.catalog import ItemPolicy
from atlasrec.models.ranking.policy import PolicyConfig, PolicyFilter
from atlasrec.models.ranking.rerank import RerankConfig, Reranker, relevance


def test_rules_boost_within_one_and_bury_below_everything() -> None:
    scaled = relevance(np.array([3.0, 2.0, 1.0, 0.0]))
    assert scaled.tolist() == [1.0, 2 / 3, 1 / 3, 0.0]
    vectors = np.eye(4, dtype=np.float32)
    order, out = Reranker(RerankConfig(mmr_lambda=1.0)).one(
        scaled,
        np.array([1.0, 1.0, 4.0, 1.0]),
        np.array([True, False, False, False]),
        lambda at: vectors[at],
        4,
    )
    assert order.tolist() == [2, 1, 3, 0] and out[2] == 1.0 and out[0] < 0


def test_mmr_moves_a_near_duplicate_down_and_batch_is_one_per_list() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    scaled = np.array([1.0, 0.95, 0.9])
    ones, bury = np.ones(3), np.zeros(3, dtype=bool)
    reranker = Reranker(RerankConfig(mmr_lambda=0.5))
    order, _ = reranker.one(scaled, ones, bury, lambda at: vectors[at], 2)
    assert order.tolist() == [0, 2, 1]
    batch = reranker.batch(
        [scaled, scaled[::-1].copy()], [ones] * 2, [bury] * 2, [lambda at: vectors[at]] * 2, 2
    )
    assert batch[0][0].tolist() == order.tolist()
    assert (
        batch[1][0].tolist()
        == reranker.one(scaled[::-1].copy(), ones, bury, lambda at: vectors[at], 2)[0].tolist()
    )


def test_the_policy_filter_keeps_the_first_k_allowed_items() -> None:
    adult = ItemPolicy(min_age=18)
    entries = [
        ("a", "x", adult, 0.9),
        ("b", "y", ItemPolicy(), 0.8),
        ("c", "x", ItemPolicy(), 0.7),
        ("d", "x", ItemPolicy(), 0.6),
    ]
    young = PolicyFilter(PolicyConfig(user_age=12, categories=frozenset({"x"})))
    assert young.one(iter(entries), 1) == [("c", 0.7)]
    anyone = PolicyFilter(PolicyConfig(user_age=30, exclude_items=frozenset({"c"})))
    assert anyone.one(entries, 3) == [("a", 0.9), ("b", 0.8), ("d", 0.6)]
    assert anyone.batch([entries, entries[1:]], 1) == [[("a", 0.9)], [("b", 0.8)]]
