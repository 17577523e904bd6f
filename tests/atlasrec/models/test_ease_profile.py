"""The `profile` order's weights: EASE over the catalog's head, kept dense."""

from __future__ import annotations

import numpy as np
import pytest

from atlasrec.evaluation import EASE, Interactions, ndcg_at_k
from atlasrec.models.ease_profile import (
    EASE_L2,
    L2_GRID,
    ProfileWeights,
    choose_l2,
    profile_weights,
)


def clustered(n_users: int = 300, n_items: int = 60, seed: int = 0) -> list[np.ndarray]:
    """Users drawn from 3 item clusters, with a popularity skew inside each."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        cluster = np.arange(n_items)[u % 3 :: 3]
        p = 1.0 / np.arange(1, len(cluster) + 1)
        out.append(rng.choice(cluster, size=8, replace=False, p=p / p.sum()).astype(np.int64))
    return out


def as_log(sequences: list[np.ndarray], n_items: int) -> Interactions:
    users = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    items = np.concatenate(sequences)
    return Interactions.from_arrays(
        users, items, np.arange(len(items)), n_users=len(sequences), n_items=n_items
    )


def test_a_whole_catalog_head_ranks_as_the_ease_baseline() -> None:
    sequences = clustered()
    weights = profile_weights(sequences, 60, head=60)
    ease = EASE()
    ease.fit(as_log(sequences, 60))
    assert ease.config.l2 == EASE_L2
    users = np.arange(20)
    slots = weights.slots
    for user, expected in zip(users, ease.recommend(users, 5), strict=True):
        profile = weights.profile(sequences[user], slots)
        np.testing.assert_array_equal(profile.best(5), expected)


def test_the_head_is_the_most_interacted_items_and_others_score_nothing() -> None:
    sequences = [np.array([0, 1, 2]), np.array([0, 1]), np.array([0, 3]), np.array([4])]
    weights = profile_weights(sequences, 6, head=2)
    np.testing.assert_array_equal(weights.head, [0, 1])  # 3 and 2 users; 5 has none
    assert weights.weights.shape == (2, 2) and weights.weights.dtype == np.float32
    np.testing.assert_array_equal(weights.slots, [0, 1, -1, -1, -1, -1])
    profile = weights.profile(np.array([0, 3]), weights.slots)  # 3 is outside the head
    assert profile.affinity(np.array([1, 2, 5])).tolist()[1:] == [0.0, 0.0]
    assert profile.affinity(np.array([1]))[0] > 0  # 1 goes with 0


def test_a_history_outside_the_head_has_an_empty_profile() -> None:
    weights = profile_weights([np.array([0, 1]), np.array([0, 1])], 4, head=2)
    profile = weights.profile(np.array([2, 3, -1]), weights.slots)
    assert not profile.affinity(np.arange(4)).any() and len(profile.best(3)) == 0


def test_items_nobody_interacted_with_are_not_in_the_head() -> None:
    weights = profile_weights([np.array([1])], 5, head=4)
    np.testing.assert_array_equal(weights.head, [1])


def test_mismatched_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="expected"):
        ProfileWeights(np.array([0, 1]), np.zeros((3, 3)), 4)
    with pytest.raises(ValueError, match="sorted"):
        ProfileWeights(np.array([1, 0]), np.zeros((2, 2)), 4)
    with pytest.raises(ValueError, match="within"):
        ProfileWeights(np.array([0, 4]), np.zeros((2, 2)), 4)
    with pytest.raises(ValueError, match="head must"):
        profile_weights([np.array([0])], 1, head=0)


def test_the_ridge_penalty_is_chosen_by_the_profile_order_on_held_out_items() -> None:
    sequences = clustered(seed=1)
    heldout = {u: s[-2:] for u, s in enumerate(sequences[:100])}
    prefix = [s[:-2] if u < 100 else s for u, s in enumerate(sequences)]
    l2, scores = choose_l2(prefix, heldout, 60, head=60)
    assert set(scores) == {f"{g:g}" for g in L2_GRID}
    assert scores[f"{l2:g}"] == max(scores.values()) > 0
    # each score is the NDCG@10 of that penalty's profile order, recomputed here
    weights = profile_weights(prefix, 60, head=60, l2=l2)
    slots, users = weights.slots, sorted(heldout)
    ranked = np.array([weights.profile(prefix[u], slots).best(10) for u in users])
    truth = [heldout[u] for u in users]
    assert ndcg_at_k(ranked, truth, 10).mean() == pytest.approx(scores[f"{l2:g}"], rel=1e-5)


def test_without_held_out_users_the_default_penalty_is_kept() -> None:
    assert choose_l2(clustered(), {}, 60) == (EASE_L2, {})
