"""The two-tower retrieval model.

- `Backbone` (ID-free, shareable across tenants): an item tower over item content embeddings
  and a user tower over the pooled vectors of the user's recent items.
- `TwoTower` adds the tenant-local part: item-id residual embeddings and the weight of a
  popularity prior (`logit += w * log(1 + count)`), which never leave the tenant.

Only `nn.Linear` and `nn.Embedding` carry parameters: Opacus computes per-user gradients
for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class TwoTowerConfig:
    """Model and training hyper-parameters."""

    dim: int = 64
    hidden: int = 256
    history: int = 50
    recency_half_life: float = 10.0
    residuals: bool = True
    random_share: float = 0.0
    """Share of examples that hold out random items of the history instead of the next ones."""
    positives: int = 20
    negatives: int = 256
    temperature: float = 0.07
    epochs: int = 30
    example_budget: int = 400_000
    """Most user examples a training draws (users x epochs): past it, fewer epochs
    (`for_users`), so a 100K-user tenant trains in minutes, not hours."""
    batch_size: int = 64
    lr: float = 3e-3
    max_grad_norm: float = 1.0
    seed: int = 0
    pretrain_steps: int = 0
    """Content-only pretraining steps of fresh towers (`atlasrec.models.pretrain`): what DP and
    federated runs use (`BACKBONE_CONFIG`); it cost the full non-DP model NDCG (0.0515 ->
    0.0374 on ml-latest-small), so 0 (none) by default."""

    def for_users(self, n_users: int) -> TwoTowerConfig:
        """The config of a training on `n_users` users, its epochs cut to the example budget.

        At least one epoch; applying it twice changes nothing.
        """
        epochs = min(self.epochs, max(1, self.example_budget // max(n_users, 1)))
        return replace(self, epochs=epochs)

    def as_dict(self) -> dict[str, float | int]:
        """Plain data, for lineage."""
        return asdict(self)


class ItemTower(nn.Module):
    """Item content embedding -> item vector."""

    def __init__(self, content_dim: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.inp = nn.Linear(content_dim, hidden)
        self.out = nn.Linear(hidden, dim)

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        """Map [..., content_dim] to [..., dim]."""
        out: torch.Tensor = self.out(F.gelu(self.inp(content)))
        return out


class UserTower(nn.Module):
    """Pooled vector of the user's recent items -> user vector."""

    def __init__(self, hidden: int, dim: int) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Map [B, dim] to [B, dim] (residual MLP)."""
        out: torch.Tensor = pooled + self.out(F.gelu(self.inp(pooled)))
        return out


class Backbone(nn.Module):
    """The ID-free part: transfers across tenants and catalogs (the cold-start backbone)."""

    def __init__(self, content_dim: int, config: TwoTowerConfig) -> None:
        super().__init__()
        self.item_tower = ItemTower(content_dim, config.hidden, config.dim)
        self.user_tower = UserTower(config.hidden, config.dim)


class TwoTower(nn.Module):
    """Backbone plus tenant-local item-id residuals over one tenant's catalog.

    Item index `n_items` is padding: zero content, zero residual, always masked.
    The popularity prior's counts (`set_popularity`) are a DP run's release of them
    (`atlasrec.models.popularity`); a model trained without counts has no prior (w = 0).
    """

    def __init__(self, content: np.ndarray, config: TwoTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.n_items, content_dim = content.shape
        padded = np.vstack([content, np.zeros((1, content_dim), dtype=np.float32)])
        self.register_buffer("content", torch.from_numpy(padded))
        age = torch.arange(config.history - 1, -1, -1, dtype=torch.float32)
        self.register_buffer("recency", torch.pow(0.5, age / config.recency_half_life))
        self.backbone = Backbone(content_dim, config)
        self.residual = nn.Embedding(self.n_items + 1, config.dim, padding_idx=self.n_items)
        nn.init.zeros_(self.residual.weight)
        self.residual.weight.requires_grad_(config.residuals)
        self.register_buffer("log_popularity", torch.zeros(self.n_items + 1))
        self.popularity = nn.Linear(1, 1, bias=False)
        nn.init.ones_(self.popularity.weight)
        self.shared_items = False

    def set_popularity(self, counts: np.ndarray) -> None:
        """Use per-item `counts` [n_items] for the popularity prior (negative ones as 0)."""
        if counts.shape != (self.n_items,):
            raise ValueError(f"popularity counts must have shape ({self.n_items},)")
        values = np.log1p(np.maximum(np.nan_to_num(counts.astype(np.float64)), 0.0))
        padded = np.concatenate([values, [0.0]]).astype(np.float32)
        buffer: torch.Tensor = self.log_popularity  # type: ignore[assignment]
        buffer.copy_(torch.from_numpy(padded))

    @property
    def popularity_weight(self) -> float:
        """`w` of the popularity prior."""
        return float(self.popularity.weight.detach()[0, 0])

    def item_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        """Unnormalised vectors of items `idx` (any shape) -> [..., dim]."""
        content: torch.Tensor = self.content  # type: ignore[assignment]
        vectors: torch.Tensor = self.backbone.item_tower(content[idx])
        if self.config.residuals:
            vectors = vectors + self.residual(idx)
        return vectors

    def _users_from(self, history_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        recency: torch.Tensor = self.recency  # type: ignore[assignment]
        weights = mask * recency  # history is right-aligned: the last column is newest
        pooled = (history_vectors * weights.unsqueeze(-1)).sum(1)
        pooled = pooled / weights.sum(1, keepdim=True).clamp(min=1e-6)
        return F.normalize(self.backbone.user_tower(pooled), dim=-1)

    def user_vectors(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm user vectors from history item indices [B, L] and their mask [B, L]."""
        return self._users_from(self.item_vectors(history), mask)

    def forward(
        self, history: torch.Tensor, mask: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """Logits [B, C] of candidate items [B, C] for each user.

        The item tower runs once over history and candidates together, so each layer is used
        once per forward pass (what Opacus' per-sample gradient hooks handle best). With
        `shared_items` (non-DP training) it runs once per distinct item of the batch instead:
        the same values and gradients, several times fewer FLOPs. Opacus' per-user gradients
        need a row per user, so DP training never sets it.
        """
        indices = torch.cat([history, candidates], dim=1)
        if self.shared_items:
            distinct, where = torch.unique(indices, return_inverse=True)
            vectors = self.item_vectors(distinct)[where]
        else:
            vectors = self.item_vectors(indices)
        length = history.shape[1]
        users = self._users_from(vectors[:, :length], mask)
        items = F.normalize(vectors[:, length:], dim=-1)
        logits: torch.Tensor = torch.einsum("bd,bcd->bc", users, items) / self.config.temperature
        log_popularity: torch.Tensor = self.log_popularity  # type: ignore[assignment]
        prior: torch.Tensor = self.popularity(log_popularity[candidates].unsqueeze(-1))
        return logits + prior.squeeze(-1)

    @torch.no_grad()
    def encode_histories(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """Unit-norm user vectors for item-index histories, each oldest first.

        The last `config.history` items count; an empty history gives the cold-start vector.
        """
        raw = self.raw_item_vectors()
        return self.encode_vector_histories([raw[list(items)] for items in histories])

    @torch.no_grad()
    def encode_vector_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Unit-norm user vectors from each history's raw item vectors [n, dim], oldest first.

        The path serving takes, where a history may hold items added after training (their
        raw vectors come from `content_item_vectors`).
        """
        length, dim = self.config.history, self.config.dim
        padded = np.zeros((len(histories), length, dim), dtype=np.float32)
        mask = np.zeros((len(histories), length), dtype=np.float32)
        for row, vectors in enumerate(histories):
            recent = np.asarray(vectors, dtype=np.float32)[-length:]
            if len(recent):
                padded[row, length - len(recent) :] = recent  # right-aligned: recent last
                mask[row, length - len(recent) :] = 1.0
        users = self._users_from(torch.from_numpy(padded), torch.from_numpy(mask))
        return users.numpy()

    @torch.no_grad()
    def raw_item_vectors(self) -> np.ndarray:
        """Unnormalised vectors of every catalog item (what the user tower pools)."""
        out: np.ndarray = self.item_vectors(torch.arange(self.n_items)).numpy()
        return out.astype(np.float32)

    @torch.no_grad()
    def content_item_vectors(self, content: np.ndarray) -> np.ndarray:
        """Raw vectors of items outside the trained catalog, from their content alone."""
        out: np.ndarray = self.backbone.item_tower(torch.from_numpy(content)).numpy()
        return out.astype(np.float32)

    @torch.no_grad()
    def all_item_vectors(self) -> np.ndarray:
        """Unit-norm vectors of every catalog item, for the retrieval index."""
        idx = torch.arange(self.n_items)
        return F.normalize(self.item_vectors(idx), dim=-1).numpy().astype(np.float32)


def sampled_softmax_loss(
    logits: torch.Tensor, n_positives: int, positive_mask: torch.Tensor, negative_mask: torch.Tensor
) -> torch.Tensor:
    """Per-user loss [B]: each positive against the user's own sampled negatives.

    `logits` is [B, P + K] (P positives first); masks mark real positives [B, P] and usable
    negatives [B, K]. Negatives are sampled per user, independently of other users, so each
    user's loss depends only on that user's data (as per-user DP clipping requires).
    """
    pos = logits[:, :n_positives]
    neg = logits[:, n_positives:].masked_fill(~negative_mask, float("-inf"))
    neg_lse = torch.logsumexp(neg, dim=1, keepdim=True)  # [B, 1]
    per_pos = -pos + torch.logaddexp(pos, neg_lse)  # -log softmax of each positive
    per_pos = per_pos * positive_mask
    return per_pos.sum(1) / positive_mask.sum(1).clamp(min=1.0)
