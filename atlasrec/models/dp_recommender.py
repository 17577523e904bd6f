"""What `atlasrec train --epsilon E` publishes, as an evaluation `Recommender`.

The same three mechanisms as a DP training run (`dp_ease.run_mechanisms`: the count
release, the Gram release, the DP-SGD steps, composed to `epsilon`), the same DP-EASE head
and DP-SGD two-tower model with its popularity prior, ranked as serving ranks it: the
model's own scoring over the retrieval and DP-EASE candidates (`RankingPipeline`), in the
default order a DP run publishes (`profile` where there is a Gram release, else `next`).
"""

from __future__ import annotations

import numpy as np

from atlasrec.evaluation import Interactions
from atlasrec.intents import DefaultOrder
from atlasrec.models.dp_ease import DpEaseConfig, as_profile, fit_dp_ease, run_mechanisms
from atlasrec.models.ease_profile import ProfileWeights
from atlasrec.models.popularity import release_counts
from atlasrec.models.ranking.pipeline import RankingPipeline
from atlasrec.models.ranking.ranker import model_ranker
from atlasrec.models.recommender import user_sequences
from atlasrec.models.training import DpPlan, dp_schedule, train
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig


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
        ease: DpEaseConfig | None = None,
    ) -> None:
        self.content, self.codes, self.config = content, codes, config
        self.epsilon, self.delta = epsilon, delta
        self.ease = ease or DpEaseConfig()
        self.model: TwoTower | None = None
        self.profile: ProfileWeights | None = None
        self._log: Interactions | None = None

    def fit(self, train_data: Interactions) -> None:
        """Release the counts and the Gram matrix, then train with DP-SGD."""
        sequences = user_sequences(train_data)
        n_users = sum(1 for s in sequences if len(s))
        rate, steps = dp_schedule(n_users, self.config)
        counts, gram, sgd = run_mechanisms(self.epsilon, self.delta, rate, steps)
        released = None
        self.profile = None
        if counts is not None:
            released = release_counts(sequences, train_data.n_items, counts)
            if gram is not None:
                head = fit_dp_ease(sequences, released, self.ease, gram)
                self.profile = as_profile(head)
        plan = DpPlan(sgd.noise_multiplier, rate, steps, self.config.max_grad_norm, self.delta)
        self.model, _ = train(self.content, sequences, self.config, dp=plan, popularity=released)
        self._log = train_data

    @property
    def order(self) -> DefaultOrder:
        """The default order the run publishes."""
        return DefaultOrder("profile" if self.profile is not None else "next")

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        """Top-k unseen items per user, in the run's default order."""
        assert self.model is not None and self._log is not None
        return RankingPipeline(model_ranker(self.model)).batch(
            self.model, self._log, self.codes, users, k, profile=self.profile, order=self.order
        )
