"""What a DP training run publishes, as an evaluation recommender."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from atlasrec.evaluation import Interactions, PopScorer
from atlasrec.intents import DefaultOrder
from atlasrec.models.dp_recommender import DpModelRecommender
from atlasrec.models.ranking.features import category_codes
from atlasrec.models.recommender import user_sequences
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import dp_config

# the DP configuration, with short pretraining (dp_config sets the backbone's)
CONFIG = replace(dp_config(TwoTowerConfig(dim=8, history=5, epochs=1)), pretrain_steps=5)


def log(n_users: int = 60, n_items: int = 25, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), 6)
    items = np.concatenate([rng.choice(n_items, 6, replace=False) for _ in range(n_users)])
    ts = np.arange(len(users))
    return Interactions.from_arrays(users, items, ts, n_users=n_users, n_items=n_items)


def test_a_dp_run_ranks_by_its_dp_ease_profile_and_never_returns_seen_items() -> None:
    data = log()
    content = np.random.default_rng(1).normal(size=(25, 6)).astype(np.float32)
    dp = DpModelRecommender(content, category_codes([None] * 25), CONFIG, epsilon=8.0, delta=1e-5)
    dp.fit(data)
    assert dp.fitted is not None and dp.fitted.profile is not None
    # the order its validation release chose (random data: any); here its profile order
    assert "dp_validation" in dp.fitted.order_lineage
    dp.fitted = replace(dp.fitted, order=DefaultOrder("profile"))
    profile = dp.fitted.profile
    users = np.arange(10)
    out = dp.recommend(users, 5)
    assert out.shape == (10, 5) and (out >= 0).all()
    for user, row in zip(users, out, strict=True):
        assert not set(row.tolist()) & set(user_sequences(data)[user].tolist())
        # the unseen head items with a positive pooled weight lead, strongest first
        pooled = profile.profile(user_sequences(data)[user], profile.slots)
        affinity = pooled.affinity(row)
        strong = int((affinity > 0).sum())
        assert (np.diff(affinity[:strong]) <= 0).all()


def test_too_small_an_epsilon_publishes_the_next_order() -> None:
    dp = DpModelRecommender(
        np.random.default_rng(1).normal(size=(25, 6)).astype(np.float32),
        category_codes([None] * 25),
        CONFIG,
        epsilon=0.3,
        delta=1e-5,
    )
    dp.fit(log())
    assert dp.fitted is not None and dp.fitted.profile is None and dp.order.order == "next"
    assert "dp_validation" not in dp.fitted.order_lineage  # no count release, no validation
    assert dp.recommend(np.arange(3), 4).shape == (3, 4)


def test_at_the_floor_a_dp_run_serves_popularity_as_serving_does() -> None:
    data = log()
    content = np.random.default_rng(1).normal(size=(25, 6)).astype(np.float32)
    dp = DpModelRecommender(content, category_codes([None] * 25), CONFIG, epsilon=8.0, delta=1e-5)
    dp.fit(data)
    assert dp.fitted is not None
    dp.fitted = replace(dp.fitted, order=DefaultOrder("popularity"))
    out = dp.recommend(np.arange(4), 5)
    popularity = PopScorer()  # the live counts serving ranks by: the log's, not the release
    popularity.fit(data)
    np.testing.assert_array_equal(out, popularity.recommend(np.arange(4), 5))
