"""The two-tower model as an evaluation `Recommender` (same protocol as the baselines)."""

from __future__ import annotations

import numpy as np
import torch

from atlasrec.evaluation import Interactions, top_k
from atlasrec.models.training import DpPlan, TrainReport, dp_schedule, train
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig
from privacy.accounting import calibrate_noise


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
    """Trains the two-tower model on `fit`; recommends by inner product over all items.

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

    def fit(self, train_data: Interactions) -> None:
        """Train on `train_data` (with DP when an epsilon was given)."""
        self._sequences = user_sequences(train_data)
        plan = None
        if self.epsilon is not None:
            n_users = sum(1 for s in self._sequences if len(s))
            rate, steps = dp_schedule(n_users, self.config)
            sigma = calibrate_noise(self.epsilon, self.delta, rate, steps)
            plan = DpPlan(sigma, rate, steps, self.config.max_grad_norm, self.delta)
        self.model, self.report = train(
            self.content, self._sequences, self.config, dp=plan, init_backbone=self.init_backbone
        )

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        """Top-k unseen items per user."""
        assert self.model is not None
        items = self.model.all_item_vectors()
        vectors = self.model.encode_histories([self._sequences[u] for u in users.tolist()])
        scores = vectors @ items.T
        for row, u in enumerate(users.tolist()):
            scores[row, self._sequences[u]] = -np.inf
        return top_k(scores, k)
