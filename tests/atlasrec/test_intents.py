"""The `profile` intent's ordering rule (`atlasrec.intents.profile_scores`)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.intents import BLEND_DEPTH, blend_scores, profile_scores

finite = st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite, st.floats(-1.0, 5.0, allow_nan=False)), min_size=1, max_size=30))
def test_positive_affinities_come_first_by_affinity_then_the_rest_in_ranked_order(
    pairs: list[tuple[float, float]],
) -> None:
    ranked = np.array([r for r, _ in pairs])
    affinity = np.array([a for _, a in pairs])
    scores = profile_scores(ranked, affinity)
    order = np.argsort(-scores, kind="stable")
    positive = affinity[order] > 0
    n = int(positive.sum())
    assert positive[:n].all() and not positive[n:].any()  # every positive above every other
    assert (np.diff(affinity[order][:n]) <= 0).all()  # positives: strongest first
    assert (np.diff(ranked[order][n:]) <= 0).all()  # the rest: the next intent's order
    if n == 0:
        np.testing.assert_array_equal(scores, ranked)  # no profile: the next intent's scores


def test_profile_scores_need_one_affinity_per_candidate() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        profile_scores(np.zeros(3), np.zeros(2))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(finite, st.floats(-1.0, 5.0, allow_nan=False)), min_size=1, max_size=30),
    st.floats(0.0, 1.0),
)
def test_blend_fuses_the_two_orders_by_rank(
    pairs: list[tuple[float, float]], weight: float
) -> None:
    ranked = np.array([r for r, _ in pairs])
    affinity = np.array([a for _, a in pairs])
    scores = blend_scores(ranked, affinity, weight)
    next_rank = np.empty(len(ranked))
    next_rank[np.argsort(-ranked, kind="stable")] = np.arange(len(ranked))
    positive = np.flatnonzero(affinity > 0)
    profile_rank = np.full(len(ranked), np.inf)
    profile_rank[positive[np.argsort(-affinity[positive], kind="stable")]] = np.arange(
        len(positive)
    )
    expected = weight / (BLEND_DEPTH + next_rank) + (1 - weight) / (BLEND_DEPTH + profile_rank)
    np.testing.assert_allclose(scores, expected, atol=1e-9)


def test_blend_weight_one_is_the_next_order_and_zero_the_profile_order() -> None:
    rng = np.random.default_rng(0)
    ranked, affinity = rng.normal(size=40), rng.normal(size=40)
    nxt = np.argsort(-blend_scores(ranked, affinity, 1.0), kind="stable")
    np.testing.assert_array_equal(nxt, np.argsort(-ranked, kind="stable"))
    profile = np.argsort(-blend_scores(ranked, affinity, 0.0), kind="stable")
    np.testing.assert_array_equal(
        profile, np.argsort(-profile_scores(ranked, affinity), kind="stable")
    )


def test_blend_refuses_a_weight_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="blend weight"):
        blend_scores(np.zeros(3), np.zeros(3), 1.5)
