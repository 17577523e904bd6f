"""The two-tower model with its ranker as an evaluation `Recommender`, for each intent."""

from __future__ import annotations

import numpy as np

from atlasrec.evaluation import Interactions, PopScorer
from atlasrec.intents import DefaultOrder, Intent
from atlasrec.models.ranking.default_order import served_order
from atlasrec.models.ranking.fit import MID_HISTORY, RankedModel, train_with_ranker
from atlasrec.models.ranking.pipeline import RankingConfig, RankingPipeline
from atlasrec.models.ranking.retrieve import N_CANDIDATES, RetrieveConfig
from atlasrec.models.two_tower import TwoTowerConfig


class TwoTowerRankerRecommender:
    """The two-tower model with its ranker, as an evaluation `Recommender`.

    `fit` runs what `atlasrec train --no-dp` runs (`train_with_ranker`) on the train log
    alone; `recommend` ranks the candidates as of each user's last train row
    (`RankingPipeline.batch`), for the `next` intent unless told otherwise. `for_intent` is
    the same fit as a recommender for another intent.
    """

    def __init__(
        self,
        content: np.ndarray,
        codes: np.ndarray,
        config: TwoTowerConfig | None = None,
        *,
        retrain: bool = True,
        n_candidates: int = N_CANDIDATES,
        mid_history: bool = MID_HISTORY,
    ) -> None:
        self.content, self.codes = content, codes
        self.config = config or TwoTowerConfig()
        self.retrain, self.n_candidates = retrain, n_candidates
        self.mid_history = mid_history
        self.fitted: RankedModel | None = None
        self._log: Interactions | None = None

    def for_intent(self, intent: Intent | None) -> IntentRecommender:
        """The same fit, ranked for `intent` (None: the default order; no second training)."""
        return IntentRecommender(self, intent)

    def fitted_on(self, data: Interactions) -> bool:
        """Whether the last `fit` was on `data` (the same object)."""
        return self._log is data

    def fit(self, train_data: Interactions) -> None:
        """Train the retrieval model and fit the ranker on `train_data`."""
        self.fitted = train_with_ranker(
            self.content,
            self.codes,
            train_data,
            self.config,
            retrain=self.retrain,
            n_candidates=self.n_candidates,
            mid_history=self.mid_history,
        )
        self._log = train_data

    def recommend(self, users: np.ndarray, k: int, intent: Intent | None = "next") -> np.ndarray:
        """Top-k unseen items per user, for `intent` (None: the model's default order).

        An order below popularity on validation is served as popularity (the floor).
        """
        assert self.fitted is not None and self._log is not None
        default = self.fitted.order
        order = served_order(default, intent)
        if order == "popularity":
            popularity = PopScorer()
            popularity.fit(self._log)
            return popularity.recommend(users, k)
        config = RankingConfig(RetrieveConfig(n_candidates=self.n_candidates))
        return RankingPipeline(self.fitted.ranker, config).batch(
            self.fitted.model,
            self._log,
            self.codes,
            users,
            k,
            neighbours=self.fitted.neighbours,
            profile=self.fitted.profile,
            order=DefaultOrder(order, default.weight),
        )


class IntentRecommender:
    """A `TwoTowerRankerRecommender`'s fit ranked for `intent`, as an evaluation `Recommender`.

    `fit` fits the base only where it was not fitted on that log already (an evaluation
    lists this after its base, which it then reuses).
    """

    def __init__(self, base: TwoTowerRankerRecommender, intent: Intent | None) -> None:
        self.base, self.intent = base, intent

    def fit(self, train_data: Interactions) -> None:
        """Fit the base on `train_data` unless it already is."""
        if not self.base.fitted_on(train_data):
            self.base.fit(train_data)

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        """Top-k unseen items per user, for this intent."""
        return self.base.recommend(users, k, intent=self.intent)
