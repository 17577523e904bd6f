"""Offline evaluation: interaction logs, splits, top-k metrics, baselines and a runner."""

from atlasrec.evaluation.baselines import (
    ALS,
    EASE,
    SCORE_BUDGET,
    ALSConfig,
    EASEConfig,
    NotFittedError,
    PopConfig,
    PopScorer,
    Recommender,
    ease_weights,
    ease_weights_from_gram,
    top_k,
)
from atlasrec.evaluation.data import Interactions
from atlasrec.evaluation.metrics import coverage_at_k, map_at_k, ndcg_at_k, recall_at_k
from atlasrec.evaluation.runner import GroupReport, RecommenderReport, evaluate
from atlasrec.evaluation.splits import Split, random_user_split, temporal_leave_last_out

__all__ = [
    "ALS",
    "EASE",
    "SCORE_BUDGET",
    "ALSConfig",
    "EASEConfig",
    "GroupReport",
    "Interactions",
    "NotFittedError",
    "PopConfig",
    "PopScorer",
    "Recommender",
    "RecommenderReport",
    "Split",
    "coverage_at_k",
    "ease_weights",
    "ease_weights_from_gram",
    "evaluate",
    "map_at_k",
    "ndcg_at_k",
    "random_user_split",
    "recall_at_k",
    "temporal_leave_last_out",
    "top_k",
]
