"""No training-serving skew: the same history gives the same user vector and features."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from utils.factories import INTERACTIONS_HEADER, seed_music_tenant, write_csv

from atlasrec.dataplane.training_data import load_tenant_dataset, plant_canaries
from atlasrec.ingest import ingest
from atlasrec.intents import DefaultOrder
from atlasrec.models.cooccurrence import item_neighbours
from atlasrec.models.ranking import retrieve
from atlasrec.models.ranking.features import (
    FEATURES,
    StatsIndex,
    category_codes,
    cooccurrence_affinity,
    ranking_features,
)
from atlasrec.models.ranking.pipeline import RankingConfig, RankingPipeline
from atlasrec.models.ranking.ranker import DEFAULT_RANKER, LinearRanker
from atlasrec.models.ranking.rerank import RerankConfig
from atlasrec.models.ranking.retrieve import RetrieveConfig
from atlasrec.models.recommender import user_sequences
from atlasrec.online_store import MemoryBackend, OnlineStore
from atlasrec.pipelines.recommend import NO_DEADLINES
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope
from privacy.canaries import canaries
from serving import pipeline
from serving.pipeline import Query, _cooccurrence, _ranking_head, _stats, history_positions
from serving.runtime import RegionRuntime


def test_offline_and_online_features_are_identical(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = seed_music_tenant(platform, "shop", Region.EU, tmp_path)
    plane = platform.plane(Region.EU)
    # repeats and out-of-order rows: the history must still be each item at its latest time
    extra = [
        ("user-1", "i4", 1_700_000_900, "view", 2.0),
        ("user-1", "i0", 1_700_000_050, "view", 1.0),
        ("user-1", "i7", 1_700_000_950, "buy", 1.0),
    ]
    ingest(
        plane,
        scope,
        secret=platform.secret,
        actor="t",
        interactions=write_csv(tmp_path / "more.csv", INTERACTIONS_HEADER, extra),
    )
    train_tenant(platform, "shop", actor="t", no_dp=True, config=FAST)
    online = OnlineStore(Region.EU, MemoryBackend(), plane.boundary)
    runtime = RegionRuntime(platform, Region.EU, online=online).tenant(
        platform.control.get_tenant("shop")
    )
    state = runtime.state
    assert state.model is not None
    data = load_tenant_dataset(plane, Scope("shop", Region.EU), actor="t")
    assert list(state.item_ids) == data.item_ids
    sequences = user_sequences(data.interactions)
    trained = plant_canaries(data, canaries(platform.secret, "shop"))  # as training saw it
    neighbours = item_neighbours(user_sequences(trained.interactions), len(trained.item_ids))
    assert state.neighbours is not None  # a non-DP model ships them, whatever its ranker
    assert (state.neighbours != neighbours).nnz == 0  # what training built, in serving
    if not state.ranker.uses_cooccurrence:  # rank with them
        weights = tuple(float(f == "cooccurrence") for f in FEATURES)
        state = replace(state, ranker=LinearRanker(weights=weights, fitted=True))
    stats_index = StatsIndex(data.interactions)
    codes = category_codes(data.categories)
    now = float(data.interactions.ts.max()) + 3600.0
    for user_id in ("user-1", "user-2", "user-9"):
        key = runtime.pseudonymise(user_id)
        sequence = sequences[data.user_keys.index(key)].tolist()
        stored, answered = runtime.online.recent(key)
        online_history = history_positions(state, stored, ())
        assert answered and online_history == sequence
        offline_user = state.model.encode_histories([sequence])[0]
        online_user = state.user_vector(online_history)
        assert online_user is not None
        np.testing.assert_allclose(online_user, offline_user, rtol=1e-5, atol=1e-6)

        candidates = np.array([p for p in range(state.size) if p not in set(sequence)])
        scores = state.unit[candidates] @ online_user
        profile = state.cooccurrence_profile(online_history)
        assert profile is not None  # the ranker weighs co-occurrence
        online_features = ranking_features(
            scores,
            state.categories[candidates],
            state.categories[online_history].tolist(),
            _stats(state, runtime.online, candidates),
            now,
            _cooccurrence(state, profile, candidates),
        )
        offline_stats = stats_index.as_of(candidates[None, :], np.array([now]), inclusive=True)
        offline_features = ranking_features(
            scores,
            codes[candidates],
            codes[sequence].tolist(),
            type(offline_stats)(offline_stats.counts[0], offline_stats.last_seen[0]),
            now,
            cooccurrence_affinity(neighbours, sequence, candidates),
        )
        np.testing.assert_array_equal(online_features, offline_features)

        # the ranked head: 3 retrieved candidates and 2 from the item-item source
        config = RankingConfig(RetrieveConfig(n_candidates=3, n_neighbours=2))
        monkeypatch.setattr(pipeline, "RANKING", config)
        every, every_score, head = _ranking_head(
            state, candidates, scores, online_user, set(online_history), profile
        )
        retriever = RankingPipeline(state.ranker, config).retriever
        items, item_scores, mask = retriever.batch(state.model, [np.array(sequence)], neighbours)
        assert every[head].tolist() == items[0][mask[0]].tolist()
        np.testing.assert_allclose(every_score[head], item_scores[0][mask[0]], rtol=1e-5)
        assert online_features[:, 1].max() > 0  # popularity is really there
        assert online_features[:, 4].max() > 0  # and co-occurrence


@pytest.mark.parametrize("order", [DefaultOrder("profile"), DefaultOrder("blend", 0.4)])
def test_the_profile_and_blend_orders_are_as_offline(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: DefaultOrder
) -> None:
    seed_music_tenant(platform, "shop", Region.EU, tmp_path)
    plane = platform.plane(Region.EU)
    train_tenant(platform, "shop", actor="t", no_dp=True, config=FAST)
    online = OnlineStore(Region.EU, MemoryBackend(), plane.boundary)
    runtime = RegionRuntime(platform, Region.EU, online=online).tenant(
        platform.control.get_tenant("shop")
    )
    # the retrieval order and a short head: the profile's own candidates must be added; the
    # version's default order is the one under test (a request without an intent gets it)
    state = replace(runtime.state, ranker=DEFAULT_RANKER, order=order)
    assert state.model is not None and state.neighbours is not None  # a non-DP model has them
    assert state.profile is not None  # and its dense EASE head
    data = load_tenant_dataset(plane, Scope("shop", Region.EU), actor="t")
    canary = canaries(platform.secret, "shop")
    data = plant_canaries(data, canary)  # the model's items
    codes = category_codes(data.categories)
    monkeypatch.setattr(pipeline, "RERANK", RerankConfig(mmr_lambda=1.0))  # the ranked order
    k = 6
    config = RankingConfig(RetrieveConfig(n_candidates=k))
    monkeypatch.setattr(pipeline, "RANKING", config)
    users = [data.user_keys.index(runtime.pseudonymise(u)) for u in ("user-1", "user-2", "user-9")]
    # serving never offers a canary (it is not in the catalog); nor does the offline side
    # here, so both rank the same candidates (a canary among them shifts the others' ranks)
    planted = np.isin(np.arange(len(data.item_ids)), [data.item_ids.index(c) for c in canary.items])
    top = retrieve._top

    def top_of_the_catalog(scores: np.ndarray, n: int) -> np.ndarray:
        return top(np.where(planted, -np.inf, scores), n)

    monkeypatch.setattr(retrieve, "_top", top_of_the_catalog)
    offline = RankingPipeline(state.ranker, config).batch(
        state.model,
        data.interactions,
        codes,
        np.array(users),
        k,
        neighbours=state.neighbours,
        profile=state.profile,
        order=order,
    )
    for user_id, row in zip(("user-1", "user-2", "user-9"), offline, strict=True):
        key = runtime.pseudonymise(user_id)
        online_items = pipeline.recommend(state, runtime.online, Query(key, k), NO_DEADLINES)
        expected = [data.item_ids[i] for i in row if i >= 0]
        expected = [item for item in expected if item not in canary.items][:k]
        assert [item_id for item_id, _ in online_items.items] == expected
        assert online_items.intent == order.order
        next_items = pipeline.recommend(
            state, runtime.online, Query(key, k, intent="next"), NO_DEADLINES
        )
        assert next_items.intent == "next"
    # a model version without neighbours (as a DP one) serves the next order, and says so
    bare = replace(state, neighbours=None)
    key = runtime.pseudonymise("user-1")
    served = pipeline.recommend(bare, runtime.online, Query(key, k, intent="profile"), NO_DEADLINES)
    assert served.intent == "next" and len(served.items) == k
