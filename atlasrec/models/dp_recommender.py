"""What `atlasrec train --epsilon E` publishes, as an evaluation `Recommender`.

The same mechanisms as a DP training run, composed to `epsilon`, fitted the same way
(`dp_run.fit_dp_run`: the count release, the DP-EASE head, the validation release that picks
the default order with its floor, the DP-SGD two-tower model with its popularity prior),
ranked as serving ranks it: the model's own scoring over the retrieval and DP-EASE
candidates (`RankingPipeline`), in the run's default order; at the floor, popularity by the
log's counts, as serving ranks it by the tenant's live item counts.
"""

from __future__ import annotations

import numpy as np

from atlasrec.evaluation import Interactions, PopScorer
from atlasrec.intents import DefaultOrder
from atlasrec.models.dp_run import DpRunFit, fit_dp_run, run_mechanisms
from atlasrec.models.ranking.pipeline import RankingPipeline
from atlasrec.models.ranking.ranker import model_ranker
from atlasrec.models.training import DpPlan, dp_schedule
from atlasrec.models.two_tower import TwoTowerConfig


class DpModelRecommender:
    """A DP training run's model and default order (see the module docstring)."""

    def __init__(
        self,
        content: np.ndarray,
        codes: np.ndarray,
        config: TwoTowerConfig,
        *,
        epsilon: float,
        delta: float,
    ) -> None:
        self.content, self.codes, self.config = content, codes, config
        self.epsilon, self.delta = epsilon, delta
        self.fitted: DpRunFit | None = None
        self._log: Interactions | None = None

    def fit(self, train_data: Interactions) -> None:
        """Run the DP training run's mechanisms on `train_data`."""
        n_users = int((np.bincount(train_data.users, minlength=train_data.n_users) > 0).sum())
        rate, steps = dp_schedule(n_users, self.config)
        mechanisms = run_mechanisms(self.epsilon, self.delta, rate, steps, n_users)
        sgd = mechanisms.sgd
        plan = DpPlan(sgd.noise_multiplier, rate, steps, self.config.max_grad_norm, self.delta)
        self.fitted = fit_dp_run(
            self.content, self.codes, train_data, self.config, mechanisms, plan
        )
        self._log = train_data

    @property
    def order(self) -> DefaultOrder:
        """The default order the run publishes."""
        assert self.fitted is not None
        return self.fitted.order

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        """Top-k unseen items per user, in the run's default order."""
        assert self.fitted is not None and self._log is not None
        fitted = self.fitted
        if fitted.order.order == "popularity":  # as serving: the tenant's live item counts
            popularity = PopScorer()
            popularity.fit(self._log)
            return popularity.recommend(users, k)
        return RankingPipeline(model_ranker(fitted.model)).batch(
            fitted.model,
            self._log,
            self.codes,
            users,
            k,
            profile=fitted.profile,
            order=fitted.order,
        )
