"""The `profile` order's weights: EASE over the catalog's head, kept dense.

EASE scores a user by the sum of their items' rows of its item-item matrix (Steck, WWW 2019;
`atlasrec.evaluation.ease_weights`). A model version keeps the matrix over the `PROFILE_HEAD`
items with the most users (the whole catalog when it is smaller), every entry of it: the
`profile` intent pools a history's rows (`ProfileWeights.profile`) and orders by the result.

Why dense over a head rather than each item's strongest neighbours over more items: on
ml-latest-small (9,742 items) EASE over its 1,000 to 5,000 most-interacted items scores as
EASE over all of them on both splits, while cutting each row to its 100 strongest entries
cost 6%, and pooling only a history's latest 200 items another 9% on the random split
(docs/benchmarks.md, "A default that wins both questions"). So the head is small and
whole, and a history is pooled whole. In float32 the matrix is 4 * head² bytes (16 MB at
2,000 items; float16 would halve it, but gathering and summing its rows took 4.5x as
long). Built from raw interactions, it is never part of a DP model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from atlasrec.evaluation import EASEConfig, ease_weights, ndcg_at_k, top_k
from atlasrec.models.ranking.features import CooccurrenceProfile

PROFILE_HEAD = 2_000
"""Items (the most-interacted) whose EASE rows a model version keeps, dense."""

EASE_L2 = EASEConfig().l2
"""EASE's ridge penalty (the evaluation baseline's): the default."""

L2_GRID = (100.0, 200.0, 500.0, 1_000.0, 2_000.0)
"""Ridge penalties a training run chooses from on its validation items (`choose_l2`)."""

PROFILE_K = 10


@dataclass(frozen=True)
class ProfileWeights:
    """EASE's item-item weights over a catalog's head.

    `head` holds the head's item rows (sorted, in the model's item order) and `weights` their
    dense weights: row and column j are item `head[j]`. `size` is the model's item count.
    """

    head: np.ndarray
    weights: np.ndarray
    size: int

    def __post_init__(self) -> None:
        n = len(self.head)
        if self.weights.shape != (n, n):
            raise ValueError(f"profile weights are {self.weights.shape}, expected ({n}, {n})")
        if n and (
            np.any(np.diff(self.head) <= 0) or self.head[0] < 0 or self.head[-1] >= self.size
        ):
            raise ValueError("profile head rows must be sorted, distinct and within the catalog")

    @property
    def slots(self) -> np.ndarray:
        """Item row -> its place in the head (-1 outside it)."""
        out = np.full(self.size, -1, dtype=np.int64)
        out[self.head] = np.arange(len(self.head))
        return out

    def profile(
        self, history: Sequence[int] | np.ndarray, slots: np.ndarray
    ) -> CooccurrenceProfile:
        """The mean of the rows of `history`'s head items (item rows; others count as 0).

        `slots` is `self.slots` (passed in so a caller computes it once). Every head item gets
        a value; the window is the whole history, whose items `best` never returns.
        """
        rows = np.asarray(history, dtype=np.int64)
        known = rows[(rows >= 0) & (rows < self.size)]
        places = slots[known]
        places = places[places >= 0]
        if not len(places) or not len(self.head):
            return CooccurrenceProfile(np.zeros(0, dtype=np.int64), np.zeros(0), rows)
        pooled = self.weights[places].sum(axis=0, dtype=np.float32) / np.float32(len(rows))
        return CooccurrenceProfile(self.head, pooled, rows)


def profile_weights(
    sequences: Sequence[np.ndarray], n_items: int, head: int = PROFILE_HEAD, l2: float = EASE_L2
) -> ProfileWeights:
    """EASE (ridge `l2`) over the `head` items with the most users (ties: lower row), float32.

    `sequences` are the users' item rows (duplicates count once).
    """
    x, top = _head_matrix(sequences, n_items, head)
    if not len(top):
        return ProfileWeights(top, np.zeros((0, 0), dtype=np.float32), n_items)
    return ProfileWeights(top, ease_weights(x, l2).astype(np.float32), n_items)


def choose_l2(
    sequences: Sequence[np.ndarray],
    heldout: Mapping[int, np.ndarray],
    n_items: int,
    head: int = PROFILE_HEAD,
) -> tuple[float, dict[str, float]]:
    """The ridge penalty of `L2_GRID` whose profile order scores best on `heldout`.

    `sequences` is the prefix log's (without the held-out items); the score is NDCG@10 of
    the top of each held-out user's pooled profile, unseen items only. Ties: the first.
    """
    x, top = _head_matrix(sequences, n_items, head)
    users = np.array(sorted(heldout), dtype=np.int64)
    if not len(top) or not len(users):
        return EASE_L2, {}
    truth = [heldout[int(u)] for u in users]
    history = x[users].toarray()
    scores = {}
    for l2 in L2_GRID:
        pooled = history @ ease_weights(x, l2)
        pooled[history > 0] = -np.inf
        places = top_k(pooled, PROFILE_K)
        ranked = np.where(places >= 0, top[np.maximum(places, 0)], -1)
        scores[f"{l2:g}"] = float(ndcg_at_k(ranked, truth, PROFILE_K).mean())
    best = max(L2_GRID, key=lambda l2: scores[f"{l2:g}"])
    return best, scores


def _head_matrix(
    sequences: Sequence[np.ndarray], n_items: int, head: int
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary users x head-items matrix and the head's item rows (sorted)."""
    if head < 1:
        raise ValueError(f"head must be >= 1, got {head}")
    lengths = [len(s) for s in sequences]
    users = np.repeat(np.arange(len(sequences)), lengths)
    items = np.concatenate(sequences).astype(np.int64) if sum(lengths) else np.zeros(0, np.int64)
    x = sp.csr_matrix(
        (np.ones(len(items), np.float32), (users, items)), shape=(len(sequences), n_items)
    )
    x.data[:] = 1.0  # a repeated (user, item) pair counts once
    counts = np.asarray(x.sum(axis=0)).ravel()
    top = np.sort(np.argsort(-counts, kind="stable")[: min(head, n_items)])
    top = top[counts[top] > 0].astype(np.int64)
    return x[:, top].tocsr(), top
