"""`atlasrec evaluate`: offline quality of the tenant's model against baselines, same splits.

Evaluation trains on the tenant's own data and reports only aggregate metrics to that
tenant, inside its region; it publishes no model and charges no DP budget.
"""

from __future__ import annotations

from typing import Any

from atlasrec.dataplane.training_data import load_tenant_dataset
from atlasrec.errors import InvalidInputError
from atlasrec.evaluation import (
    ALS,
    EASE,
    EASEConfig,
    PopScorer,
    Recommender,
    evaluate,
    random_user_split,
    temporal_leave_last_out,
)
from atlasrec.models.dp_recommender import DpModelRecommender
from atlasrec.models.ranking.features import category_codes
from atlasrec.models.ranking.recommender import TwoTowerRankerRecommender
from atlasrec.models.recommender import TwoTowerRecommender
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import dp_config
from atlasrec.platform import Platform

MAX_K = 1000


def evaluate_tenant(
    platform: Platform,
    tenant_id: str,
    k: int,
    *,
    actor: str,
    epsilon: float | None = None,
    config: TwoTowerConfig | None = None,
) -> dict[str, Any]:
    """Recall, NDCG, MAP and coverage at k (all, cold and warm users) on two splits.

    The two-tower model with its ranker (`two_tower+ranker`, what `atlasrec train --no-dp`
    publishes) is trained and fitted on each split's train part alone, and serves both
    intents (`atlasrec.intents`): `next`, which the temporal split asks, and `profile`
    (the same fit), closer to what the random split asks (items hidden anywhere in a
    history), and the order a request without an intent gets (`default (no intent)`), with
    the validation scores it was chosen by (`default_order`).
    """
    if not 1 <= k <= MAX_K:
        raise InvalidInputError(f"--k must be between 1 and {MAX_K}, got {k}")
    tenant = platform.control.get_tenant(tenant_id)
    scope = platform.scope(tenant_id)
    data = load_tenant_dataset(platform.plane(scope.region), scope, actor=actor)
    if data.n_interactions == 0:
        raise InvalidInputError(f"tenant {tenant_id!r} has no interactions to evaluate")
    config = config or TwoTowerConfig()
    splits = {}
    for split in (temporal_leave_last_out(data.interactions), random_user_split(data.interactions)):
        codes = category_codes(data.categories)
        ranked = TwoTowerRankerRecommender(data.content, codes, config)
        recommenders: dict[str, Recommender] = {
            "popularity": PopScorer(),
            "als": ALS(),
            "two_tower": TwoTowerRecommender(data.content, config),
            "two_tower+ranker": ranked,
            "two_tower+ranker, profile intent": ranked.for_intent("profile"),
            "default (no intent)": ranked.for_intent(None),
        }
        if len(data.item_ids) <= EASEConfig().max_items:
            recommenders["ease"] = EASE()
        if epsilon is not None:
            recommenders["dp (as train publishes)"] = DpModelRecommender(
                data.content, codes, dp_config(config), epsilon=epsilon, delta=tenant.delta
            )
        models = evaluate(recommenders, split, k)
        assert ranked.fitted is not None
        splits[split.name] = {
            "tested_users": len(split.test),
            "models": models,
            "default_order": ranked.fitted.lineage["default_order"],
        }
    return {
        "tenant_id": tenant_id,
        "region": scope.region.value,
        "k": k,
        "data_snapshot": data.snapshot,
        "items": len(data.item_ids),
        "users": len(data.user_keys),
        "interactions": data.n_interactions,
        "dp_epsilon": epsilon,
        "splits": splits,
    }
