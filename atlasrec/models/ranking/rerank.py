"""Re-ranking: business rules (item boosts, bury) and MMR diversity over the ranked head.

Scores are first mapped to [0, 1] (`relevance`), so rules and diversity act on one scale.
`Reranker.one` re-ranks one request's list (serving), `batch` many lists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MMR_LAMBDA = 0.8
MMR_POOL = 3
BURY_OFFSET = 2.0
"""Relevance is in [0, 1] and MMR's similarity term moves a gain by at most 2 * (1 - lambda)."""


@dataclass(frozen=True)
class RerankConfig:
    """How far diversity may move an item, and over how many."""

    mmr_lambda: float = MMR_LAMBDA
    """Weight of relevance against similarity to the items already picked (1: no diversity)."""
    mmr_pool: int = MMR_POOL
    """MMR picks the top `k` from the best `k * mmr_pool` items."""
    bury_offset: float = BURY_OFFSET
    """What a buried item loses: below every other item, whatever diversity adds."""


def relevance(scores: np.ndarray) -> np.ndarray:
    """Scores mapped to [0, 1] (order kept), so rules and diversity act on one scale."""
    if len(scores) == 0:
        return scores
    low, high = float(scores.min()), float(scores.max())
    return (scores - low) / (high - low) if high > low else np.ones_like(scores)


class Reranker:
    """Boosts, bury and MMR diversity: `one` for a request, `batch` for many lists."""

    def __init__(self, config: RerankConfig | None = None) -> None:
        self.config = config or RerankConfig()

    def rules(self, relevance: np.ndarray, boosts: np.ndarray, bury: np.ndarray) -> np.ndarray:
        """Relevance after item `boosts` (capped at 1) and `bury` (mask) of each candidate."""
        out = relevance.copy()
        boosted = boosts != 1.0
        out[boosted] = np.minimum(1.0, out[boosted] * boosts[boosted])
        out[bury] -= self.config.bury_offset
        return out

    def one(
        self,
        relevance: np.ndarray,
        boosts: np.ndarray,
        bury: np.ndarray,
        vectors: Callable[[np.ndarray], np.ndarray],
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(order, relevance) of one list: `rules`, then MMR over the best `k * mmr_pool`.

        `vectors` gives unit vectors of candidates (by index) for the similarity term.
        """
        relevance = self.rules(relevance, boosts, bury)
        order = np.argsort(-relevance, kind="stable")
        head = order[: k * self.config.mmr_pool]
        if len(head) <= 1:
            return order, relevance
        picked = head[self._mmr(relevance[head], vectors(head), k)]
        taken = set(picked.tolist())
        rest = np.array([i for i in order.tolist() if i not in taken], dtype=np.int64)
        return np.concatenate([picked, rest]), relevance

    def batch(
        self,
        relevance: Sequence[np.ndarray],
        boosts: Sequence[np.ndarray],
        bury: Sequence[np.ndarray],
        vectors: Sequence[Callable[[np.ndarray], np.ndarray]],
        k: int,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`one` for each list."""
        return [
            self.one(r, b, d, v, k)
            for r, b, d, v in zip(relevance, boosts, bury, vectors, strict=True)
        ]

    def _mmr(self, relevance: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
        """Indices of up to `k` of the (relevance-sorted) head picked greedily by MMR."""
        lam = self.config.mmr_lambda
        chosen = [0]
        remaining = list(range(1, len(relevance)))
        max_sim = vectors @ vectors[0]
        while remaining and len(chosen) < k:
            gains = [lam * relevance[r] - (1 - lam) * max_sim[r] for r in remaining]
            best = remaining.pop(int(np.argmax(gains)))
            chosen.append(best)
            max_sim = np.maximum(max_sim, vectors @ vectors[best])
        return np.array(chosen, dtype=np.int64)
