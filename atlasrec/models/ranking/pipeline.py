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
from atlasrec.intents import DefaultOrder, Intent, Order, blend_scores, profile_scores
from atlasrec.models.ease_profile import ProfileWeights
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
        order: DefaultOrder | None = None,
    ) -> tuple[np.ndarray, Order]:
        """One request's scores of all its candidates, and the order served.

        The ranker scores the listed candidates (`head`, with `features`); the others follow
        in retrieval order (`scores`). With the history profile's `affinity` (for the listed
        candidates), a `profile` or `blend` order (`order`; default `profile`) reorders
        them where any affinity is positive (`profile_scores`, `blend_scores`).
        """
        chosen = order or DefaultOrder("profile")
        head_scores = self.ranker.score(features).astype(np.float64)
        ranked = scores.astype(np.float64) + (head_scores.min() - TAIL_GAP if len(head) else 0.0)
        ranked[head] = head_scores
        if affinity is None or chosen.order not in ("profile", "blend"):
            return ranked, "next"
        whole = np.zeros(len(ranked))
        whole[head] = affinity
        if not (whole > 0).any():
            return ranked, "next"
        if chosen.order == "profile":
            return profile_scores(ranked, whole), "profile"
        return blend_scores(ranked, whole, chosen.weight), "blend"

    def scored(
        self,
        model: TwoTower,
        log: Interactions,
        codes: np.ndarray,
        users: np.ndarray,
        k: int,
        *,
        neighbours: sp.csr_matrix | None = None,
        profile: ProfileWeights | None = None,
        with_profile: bool = False,
    ) -> ScoredLists:
        """Each user's candidates with the ranker's scores, as of the user's last row of `log`.

        With `neighbours`, the lists include the item-item source's candidates (where the
        ranker weighs co-occurrence). With `with_profile`, the history profile's too, and
        their affinities: `profile`'s dense EASE head pooled over the whole history where
        given, else the neighbours over the latest `PROFILE_HISTORY` items.
        """
        sequences = user_sequences(log)
        histories = [sequences[u] for u in users.tolist()]
        source = neighbours if self.ranker.uses_cooccurrence else None
        profiles = None
        if with_profile and profile is not None:
            slots = profile.slots
            profiles = [profile.profile(h, slots) for h in histories]
        elif with_profile and neighbours is not None:
            profiles = [history_profile(neighbours, h) for h in histories]
        n = max(self.config.retrieve.n_candidates, k)
        items, scores, mask = self.retriever.batch(model, histories, source, profiles, n=n)
        now = np.nan_to_num(last_times(log)[users], nan=0.0)
        stats = StatsIndex(log).as_of(items, now, inclusive=True)
        features = self.features.batch(items, scores, mask, histories, codes, stats, now, source)
        ranked = self.ranker.score_lists(features, mask)
        affinity = None
        if profiles is not None:
            affinity = np.zeros_like(ranked)
            for row, pooled in enumerate(profiles):
                affinity[row, mask[row]] = pooled.affinity(items[row, mask[row]])
        return ScoredLists(items, ranked, affinity, mask)

    def batch(
        self,
        model: TwoTower,
        log: Interactions,
        codes: np.ndarray,
        users: np.ndarray,
        k: int,
        *,
        neighbours: sp.csr_matrix | None = None,
        profile: ProfileWeights | None = None,
        intent: Intent = "next",
        order: DefaultOrder | None = None,
    ) -> np.ndarray:
        """Top-`k` unseen items per user, ranked as of the user's last row of `log`.

        `order` (the model's default) where given, else `intent`'s order; see `scored`.
        Rows are padded with -1 when fewer than `k` unseen items exist.
        """
        chosen = order or DefaultOrder(intent)
        lists = self.scored(
            model,
            log,
            codes,
            users,
            k,
            neighbours=neighbours,
            profile=profile,
            with_profile=chosen.order in ("profile", "blend"),
        )
        return lists.top_k(chosen, k)


@dataclass(frozen=True)
class ScoredLists:
    """Candidate lists (rows: users) with the ranker's scores and the profile's affinities."""

    items: np.ndarray
    ranked: np.ndarray
    affinity: np.ndarray | None
    """Zero where a candidate has none; None when the profile was not pooled."""
    mask: np.ndarray

    def ordered(self, order: DefaultOrder) -> np.ndarray:
        """Each row's scores in `order` (`next` where there is no affinity)."""
        if order.order == "next" or self.affinity is None:
            return self.ranked
        out = self.ranked.copy()
        for row in range(len(out)):
            valid = self.mask[row]
            affinity = self.affinity[row, valid]
            if order.order == "profile":
                out[row, valid] = profile_scores(self.ranked[row, valid], affinity)
            else:
                out[row, valid] = blend_scores(self.ranked[row, valid], affinity, order.weight)
        return out

    def top_k(self, order: DefaultOrder, k: int) -> np.ndarray:
        """The `k` best valid items per row in `order`, padded with -1."""
        return _top_k(self.items, self.ordered(order), self.mask, k)


def _top_k(items: np.ndarray, ranked: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """The `k` best-ranked valid items per row (stable), padded with -1."""
    n = len(items)
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
    out = np.take_along_axis(items, order, 1)
    out[~np.take_along_axis(mask, order, 1)] = -1
    if out.shape[1] < k:
        out = np.hstack([out, np.full((n, k - out.shape[1]), -1, dtype=np.int64)])
    return out
