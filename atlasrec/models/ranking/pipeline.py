"""The ranking pipeline: candidate sources -> features -> ranker -> the intent's order.

`RankingPipeline` composes the components for a tenant's ranker. `batch` ranks many users
offline (evaluation: `recommender.TwoTowerRankerRecommender`); serving runs the same
components on one request (`serving.pipeline`): `retriever.one`, `features.one`, then
`rank_one`. Both score with `LinearRanker.score` and order the `profile` intent with
`atlasrec.intents.profile_scores`, so a history gets the same order online and offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from atlasrec.evaluation import Interactions
from atlasrec.intents import Intent, profile_scores
from atlasrec.models.ranking.features import (
    CandidateFeatures,
    StatsIndex,
    history_profile,
    last_times,
)
from atlasrec.models.ranking.ranker import LinearRanker
from atlasrec.models.ranking.retrieve import CandidateRetriever, RetrieveConfig
from atlasrec.models.recommender import user_sequences
from atlasrec.models.two_tower import TwoTower

TAIL_GAP = 3.0
"""A request's candidates outside the ranked list score this far below its lowest (cosine
scores are in [-1, 1]: the tail lands strictly below the list, its order kept)."""


@dataclass(frozen=True)
class RankingConfig:
    """The ranking stage's settings (the ranker itself comes with the model)."""

    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)


class RankingPipeline:
    """A tenant's ranking stage: `batch` offline, the components' `one` calls per request."""

    def __init__(self, ranker: LinearRanker, config: RankingConfig | None = None) -> None:
        self.ranker = ranker
        self.config = config or RankingConfig()
        self.retriever = CandidateRetriever(self.config.retrieve)
        self.features = CandidateFeatures(ranker.feature_config)

    def rank_one(
        self,
        features: np.ndarray,
        head: np.ndarray,
        scores: np.ndarray,
        affinity: np.ndarray | None,
    ) -> tuple[np.ndarray, Intent]:
        """One request's scores of all its candidates, and the order served.

        The ranker scores the listed candidates (`head`, with `features`); the others follow
        in retrieval order (`scores`). With the `profile` intent's `affinity` (for the
        listed candidates), a positive one orders by it (`profile_scores`).
        """
        head_scores = self.ranker.score(features).astype(np.float64)
        ranked = scores.astype(np.float64) + (head_scores.min() - TAIL_GAP if len(head) else 0.0)
        ranked[head] = head_scores
        if affinity is None:
            return ranked, "next"
        whole = np.zeros(len(ranked))
        whole[head] = affinity
        if not (whole > 0).any():
            return ranked, "next"
        return profile_scores(ranked, whole), "profile"

    def batch(
        self,
        model: TwoTower,
        log: Interactions,
        codes: np.ndarray,
        users: np.ndarray,
        k: int,
        *,
        neighbours: sp.csr_matrix | None = None,
        intent: Intent = "next",
    ) -> np.ndarray:
        """Top-`k` unseen items per user, ranked as of the user's last row of `log`.

        With `neighbours`, the lists include the item-item source's candidates (where the
        ranker weighs co-occurrence) and, for the `profile` intent, the history profile's
        (`atlasrec.intents`). Rows are padded with -1 when fewer than `k` unseen items exist.
        """
        sequences = user_sequences(log)
        histories = [sequences[u] for u in users.tolist()]
        source = neighbours if self.ranker.uses_cooccurrence else None
        profiles = None
        if intent == "profile" and neighbours is not None:
            profiles = [history_profile(neighbours, h) for h in histories]
        n = max(self.config.retrieve.n_candidates, k)
        items, scores, mask = self.retriever.batch(model, histories, source, profiles, n=n)
        now = np.nan_to_num(last_times(log)[users], nan=0.0)
        stats = StatsIndex(log).as_of(items, now, inclusive=True)
        features = self.features.batch(items, scores, mask, histories, codes, stats, now, source)
        ranked = self.ranker.score_lists(features, mask)
        for row, profile in enumerate(profiles or []):
            valid = mask[row]
            affinity = profile.affinity(items[row, valid])
            ranked[row, valid] = profile_scores(ranked[row, valid], affinity)
        return _top_k(items, ranked, mask, k)


def _top_k(items: np.ndarray, ranked: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """The `k` best-ranked valid items per row (stable), padded with -1."""
    n = len(items)
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
    out = np.take_along_axis(items, order, 1)
    out[~np.take_along_axis(mask, order, 1)] = -1
    if out.shape[1] < k:
        out = np.hstack([out, np.full((n, k - out.shape[1]), -1, dtype=np.int64)])
    return out
