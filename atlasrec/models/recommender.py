"""The two-tower model as an evaluation `Recommender` (same protocol as the baselines)."""

from __future__ import annotations

import numpy as np
import torch

from atlasrec.evaluation import Interactions, top_k
from atlasrec.models.popularity import release_counts, run_mechanisms, weighted_counts
from atlasrec.models.training import DpPlan, TrainReport, dp_schedule, train
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig


def user_sequences(data: Interactions) -> list[np.ndarray]:
    """Each user's distinct items, in order of their latest interaction."""
    order = np.lexsort((data.ts, data.users))
    users, items = data.users[order], data.items[order]
    bounds = np.searchsorted(users, np.arange(data.n_users + 1))
    sequences = []
    for u in range(data.n_users):
        seq = items[bounds[u] : bounds[u + 1]]
        _, last = np.unique(seq[::-1], return_index=True)  # keep each item's latest position
        sequences.append(seq[::-1][np.sort(last)][::-1].astype(np.int64))
    return sequences


class TwoTowerRecommender:
    """Trains the two-tower model on `fit`; recommends by its scoring over all items.

    Scores are cosine / temperature + w * log(1 + count), with the train log's exact counts
    (what serving reads from the tenant's online store). Only DP runs have the popularity
    prior (w != 0): training sees a DP release of the counts, composed into the run's
    epsilon as `atlasrec train` does.

    With `init_backbone`, training starts from those backbone weights (a federated backbone;
    `config` must have its layer sizes).
    """

    def __init__(
        self,
        content: np.ndarray,
        config: TwoTowerConfig | None = None,
        *,
        epsilon: float | None = None,
        delta: float = 1e-5,
        init_backbone: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.content = content
        self.config = config or TwoTowerConfig()
        self.epsilon, self.delta = epsilon, delta
        self.init_backbone = init_backbone
        self.model: TwoTower | None = None
        self.report: TrainReport | None = None
        self._sequences: list[np.ndarray] = []
        self._counts = np.zeros(0)

    def fit(self, train_data: Interactions) -> None:
        """Train on `train_data` (with DP when an epsilon was given)."""
        self._sequences = user_sequences(train_data)
        self._counts = weighted_counts(train_data)
        plan: DpPlan | None = None
        popularity: np.ndarray | None = None  # non-DP: the item-id residuals learn popularity
        if self.epsilon is not None:  # as `atlasrec train`: a DP count release, then DP-SGD
            n_users = sum(1 for s in self._sequences if len(s))
            rate, steps = dp_schedule(n_users, self.config)
            release, sgd = run_mechanisms(self.epsilon, self.delta, rate, steps)
            if release is not None:
                popularity = release_counts(self._sequences, train_data.n_items, release)
            plan = DpPlan(sgd.noise_multiplier, rate, steps, self.config.max_grad_norm, self.delta)
        self.model, self.report = train(
            self.content,
            self._sequences,
            self.config,
            dp=plan,
            init_backbone=self.init_backbone,
            popularity=popularity,
        )

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        """Top-k unseen items per user."""
        assert self.model is not None
        items = self.model.all_item_vectors()
        vectors = self.model.encode_histories([self._sequences[u] for u in users.tolist()])
        prior = self.model.popularity_weight * np.log1p(np.maximum(self._counts, 0.0))
        scores = vectors @ items.T / self.model.config.temperature + prior
        for row, u in enumerate(users.tolist()):
            scores[row, self._sequences[u]] = -np.inf
        return top_k(scores, k)
