"""Serving snapshots: index choice by catalog size, and catalog upserts without a rebuild."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from atlasrec.intents import DefaultOrder
from atlasrec.models.bundle import ModelBundle
from atlasrec.models.cooccurrence import item_neighbours
from atlasrec.models.ease_profile import ProfileWeights
from atlasrec.models.ranking.features import (
    FEATURES,
    NO_CATEGORY,
    UNKNOWN_ITEM,
    CooccurrenceProfile,
)
from atlasrec.models.ranking.ranker import DEFAULT_RANKER, LinearRanker
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig
from serving.pipeline import _cooccurrence, _rank, _ranking_head
from serving.retrieval import build_index
from serving.state import CONTENT_ONLY, CatalogItem, ServingState, build_state, with_items


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_exact_index_for_small_catalogs_and_hnsw_above() -> None:
    vectors = unit_rows(2_000, 16)
    exact = build_index(vectors, exact_max=5_000)
    approx = build_index(vectors, exact_max=1_000)
    assert (exact.kind, approx.kind) == ("flat", "hnsw")
    query = vectors[7]
    _, exact_found = exact.search(query, 10)
    _, approx_found = approx.search(query, 10)
    brute = np.argsort(-(vectors @ query))[:10]
    assert exact_found.tolist() == brute.tolist()
    assert len(set(approx_found.tolist()) & set(brute.tolist())) >= 9  # recall@10 >= 0.9
    assert build_index(np.zeros((0, 16), np.float32)).search(query, 5)[1].size == 0


def item(item_id: str, seed: int, category: str | None = "a", **attributes: object) -> CatalogItem:
    content = unit_rows(1, 8, seed)[0]
    return CatalogItem(item_id, category, attributes, content, f"sha-{seed}", float(seed))


def test_upserts_append_to_the_delta_and_retire_changed_items() -> None:
    state = build_state([item("x", 1), item("y", 2), item("z", 3, None)], None, {"x": 4.0})
    assert state.model_version == CONTENT_ONLY and state.indexed == 3
    assert state.categories.tolist() == [0, 0, NO_CATEGORY]
    updated = with_items(
        state,
        [
            item("y", 2, "b", blocked="true"),  # same content: updated in place
            item("x", 9),  # new content: a new position, the old one retired
            item("w", 5),  # new item
        ],
    )
    assert updated.indexed == 3 and updated.size == 5  # no rebuild: two positions in the delta
    assert updated.position == {"x": 3, "y": 1, "z": 2, "w": 4}
    assert updated.alive.tolist() == [False, True, True, True, True]
    assert updated.policies[1].blocked and updated.category_names[updated.categories[1]] == "b"
    np.testing.assert_allclose(updated.unit[3], item("x", 9).content, rtol=1e-6)
    # the old snapshot is untouched (requests in flight keep reading it)
    assert state.size == 3 and state.alive.all() and not state.policies[1].blocked


def profile_of(state: ServingState, history: list[int]) -> CooccurrenceProfile:
    """The state's co-occurrence profile of `history` (its ranker weighs co-occurrence)."""
    profile = state.cooccurrence_profile(history)
    assert profile is not None
    return profile


def _cooccurrence_state() -> tuple[ServingState, sp.csr_matrix]:
    """i0..i3 trained; i1's content then changes (a new position) and i9 is added."""
    items = [item(f"i{k}", k) for k in range(5)]
    content = np.stack([i.content for i in items])
    model = TwoTower(content, TwoTowerConfig(dim=4, hidden=8, history=5))
    # i0 co-occurs with i1 (two users) and i2 (one user); the model was trained on i0..i3
    neighbours = item_neighbours([np.array([0, 1, 2]), np.array([0, 1]), np.array([3])], 4)
    weights = tuple(float(f == "cooccurrence") for f in FEATURES)
    bundle = ModelBundle(
        "v1",
        model,
        ["i0", "i1", "i2", "i3"],
        model.all_item_vectors(),
        np.ones(4),
        {},
        LinearRanker(weights=weights, fitted=True),
        neighbours,
    )
    state = build_state(items, bundle, {})
    assert state.neighbour_index(range(5)).tolist() == [0, 1, 2, 3, UNKNOWN_ITEM]
    return with_items(state, [item("i1", 11), item("i9", 9)]), neighbours


def test_the_cooccurrence_feature_follows_item_ids_across_catalog_updates() -> None:
    state, neighbours = _cooccurrence_state()
    assert state.position["i1"] == 5 and state.neighbour_index([5, 6]).tolist() == [1, -1]
    candidates = np.array([2, 3, 4, 5, 6])  # i2, i3, i4, i1 (moved), i9
    scores = np.linspace(0.5, 0.1, 5)  # retrieval prefers the reverse of co-occurrence
    # the whole list is ranked (i0's neighbours are candidates already): no online store
    user = np.zeros(4, dtype=np.float32)
    _, ranked, _ = _rank(
        state,
        None,  # type: ignore[arg-type]
        candidates,
        scores,
        user,
        {0},
        [0],
        0.0,
        DefaultOrder("next"),
    )
    top = candidates[np.argsort(-ranked, kind="stable")]
    assert [state.item_ids[p] for p in top[:2]] == ["i1", "i2"]
    np.testing.assert_allclose(
        _cooccurrence(state, profile_of(state, [0]), candidates),
        [neighbours[0, 2], 0.0, 0.0, neighbours[0, 1], 0.0],
        rtol=1e-6,
    )


def test_the_item_item_source_adds_candidates_beyond_the_retrieval_head() -> None:
    state, neighbours = _cooccurrence_state()
    assert neighbours[0, 1] > neighbours[0, 2] > 0 and neighbours[0, 3] == 0
    # i0's neighbours by id: i1 now lives at position 5, i2 at 2
    profile = profile_of(state, [0])
    assert state.neighbour_candidates(profile, 5, set()).tolist() == [5, 2]
    assert state.neighbour_candidates(profile, 1, set()).tolist() == [5]
    assert state.neighbour_candidates(profile, 5, {5}).tolist() == [2]
    retired = replace(state, alive=np.where(np.arange(state.size) == 2, False, state.alive))
    assert retired.neighbour_candidates(profile, 5, set()).tolist() == [5]
    # retrieval found i3 and i4 only: i1 and i2 join the ranked head with their scores
    user = np.full(4, 0.5, dtype=np.float32)
    candidates, scores, head = _ranking_head(
        state, np.array([3, 4]), np.array([0.5, 0.4], dtype=np.float32), user, {0}, profile
    )
    assert candidates.tolist() == [3, 4, 5, 2] and head.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(scores[2:], state.unit[[5, 2]] @ user, rtol=1e-6)
    # a ranker without co-occurrence gets retrieval's candidates only
    plain = replace(state, ranker=DEFAULT_RANKER)
    candidates, _, head = _ranking_head(
        plain,
        np.array([3, 4]),
        np.array([0.5, 0.4], dtype=np.float32),
        user,
        {0},
        plain.cooccurrence_profile([0]),
    )
    assert candidates.tolist() == [3, 4] and head.tolist() == [0, 1]


def test_a_dp_model_serves_its_dp_ease_profile_without_neighbours() -> None:
    """A DP bundle ships DP-EASE weights (`profile`) and no co-occurrence neighbours."""
    items = [item(f"i{k}", k) for k in range(5)]
    content = np.stack([i.content for i in items])
    model = TwoTower(content, TwoTowerConfig(dim=4, hidden=8, history=5))
    # over the head i0..i2: i0 points to i2 strongly, to i1 weakly
    weights = np.array([[0.0, 0.1, 0.9], [0.1, 0.0, 0.0], [0.9, 0.0, 0.0]], np.float32)
    bundle = ModelBundle(
        "v1",
        model,
        ["i0", "i1", "i2", "i3"],
        model.all_item_vectors(),
        np.ones(4),
        {},
        DEFAULT_RANKER,
        None,
        ProfileWeights(np.array([0, 1, 2]), weights, 4),
        DefaultOrder("profile"),
    )
    state = build_state(items, bundle, {})
    assert state.neighbours is not None and state.neighbours.nnz == 0  # maps rows only
    assert state.order == DefaultOrder("profile")
    profile = state.history_profile([0])
    assert profile is not None
    assert profile.affinity(state.neighbour_index([1, 2, 3, 4])).tolist() == pytest.approx(
        [0.1, 0.9, 0.0, 0.0]
    )
    candidates = np.array([1, 2, 3, 4])
    user = np.full(4, 0.5, dtype=np.float32)
    scores = np.array([0.9, 0.1, 0.5, 0.4], dtype=np.float32)  # retrieval prefers i1
    found, ranked, served = _rank(
        state,
        None,  # type: ignore[arg-type]
        candidates,
        scores,
        user,
        {0},
        [0],
        0.0,
        state.order,
    )
    assert served == "profile"
    top = found[np.argsort(-ranked, kind="stable")]
    assert [state.item_ids[p] for p in top[:2]] == ["i2", "i1"]  # DP-EASE's order leads
