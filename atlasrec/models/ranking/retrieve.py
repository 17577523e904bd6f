"""Candidate sources of the ranking stage: the two-tower model, item-item and the profile.

A ranked list is the retrieval model's best `n_candidates` unseen items, then the
item-item source's best `n_neighbours` beyond them (where the ranker weighs co-occurrence),
then, for the `profile` intent, the history profile's best `n_profile` beyond those
(`atlasrec.intents`). `CandidateRetriever.extend` is that rule; `batch` applies it to
offline histories (item rows), `one` to a request's retrieved candidates (serving's ids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from atlasrec.intents import PROFILE_CANDIDATES
from atlasrec.models.ranking.features import CooccurrenceProfile, cooccurrence_candidates
from atlasrec.models.two_tower import TwoTower

N_CANDIDATES = 100
"""Candidates retrieved per user by the two-tower model for the ranker (lists and re-ranking)."""

NEIGHBOUR_CANDIDATES = 50
"""Further candidates per user from the item-item source, where the ranker uses it."""

_USER_BATCH = 1024

Source = Callable[[int, np.ndarray], np.ndarray]
"""A candidate source: (n, ids to exclude) -> its best `n` other ids, best first."""


@dataclass(frozen=True)
class RetrieveConfig:
    """How many candidates each source adds to a ranked list."""

    n_candidates: int = N_CANDIDATES
    """The retrieval model's best unseen items."""
    n_neighbours: int = NEIGHBOUR_CANDIDATES
    """The item-item source's best beyond them (where it is used)."""
    n_profile: int = PROFILE_CANDIDATES
    """The history profile's best beyond those (the `profile` intent)."""


class CandidateRetriever:
    """A ranked list's candidates: `batch` for offline histories, `one` for a request."""

    def __init__(self, config: RetrieveConfig | None = None) -> None:
        self.config = config or RetrieveConfig()

    def extend(
        self,
        top: np.ndarray,
        seen: np.ndarray,
        neighbours: Source | None,
        profile: Source | None,
    ) -> np.ndarray:
        """`top` (the retrieval model's best), then each given source's best beyond it."""
        return np.concatenate([top, *self.extras(top, seen, neighbours, profile)])

    def extras(
        self,
        top: np.ndarray,
        seen: np.ndarray,
        neighbours: Source | None,
        profile: Source | None,
    ) -> Iterator[np.ndarray]:
        """What each given source adds beyond `top`, in order: never `seen` or listed ids."""
        listed = np.asarray(top, dtype=np.int64)
        for source, n in ((neighbours, self.config.n_neighbours), (profile, self.config.n_profile)):
            if source is not None:
                extra = np.asarray(source(n, np.concatenate([seen, listed])), dtype=np.int64)
                listed = np.concatenate([listed, extra])
                yield extra

    def batch(
        self,
        model: TwoTower,
        histories: Sequence[np.ndarray],
        neighbours: sp.csr_matrix | None = None,
        profiles: Sequence[CooccurrenceProfile] | None = None,
        n: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates per history: (items, cosine scores, valid mask), each [users, width].

        The top `n` (default `n_candidates`) unseen items by the two-tower model (by score,
        ties by item index), then `extend`'s sources: with `neighbours`, the item-item
        source (`cooccurrence_candidates`); with `profiles` (one per history), each
        profile's best. Rows are padded (mask False) where fewer exist.
        """
        items_vectors = model.all_item_vectors()
        n = min(self.config.n_candidates if n is None else n, model.n_items)
        width = n + (self.config.n_neighbours if neighbours is not None else 0)
        width += self.config.n_profile if profiles is not None else 0
        out_items = np.zeros((len(histories), width), dtype=np.int64)
        out_scores = np.zeros((len(histories), width), dtype=np.float32)
        out_mask = np.zeros((len(histories), width), dtype=bool)
        for start in range(0, len(histories), _USER_BATCH):
            batch = histories[start : start + _USER_BATCH]
            scores = model.encode_histories([h.tolist() for h in batch]) @ items_vectors.T
            for row, seen in enumerate(batch):
                scores[row, seen] = -np.inf
            for row, seen in enumerate(batch):
                r = start + row
                cand = self.extend(
                    _top(scores[row], n),
                    seen,
                    _item_item(neighbours, seen),
                    None if profiles is None else profiles[r].best,
                )
                out_items[r, : len(cand)] = cand
                out_scores[r, : len(cand)] = scores[row, cand]  # unseen items: all finite
                out_mask[r, : len(cand)] = True
        return out_items, out_scores, out_mask

    def one(
        self,
        candidates: np.ndarray,
        scores: np.ndarray,
        seen: np.ndarray,
        neighbours: Source | None,
        profile: Source | None,
        score_of: Callable[[np.ndarray], np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(candidates, scores, indices of the ranked list) of one request.

        The list is the `n_candidates` best-scored of the retrieved `candidates` (ties in
        their order), then `extend`'s sources. A source's id that retrieval did not find
        joins the candidates with its retrieval score (`score_of`).
        """
        head = np.argsort(-scores, kind="stable")[: self.config.n_candidates]
        for extra in self.extras(candidates[head], seen, neighbours, profile):
            if not len(extra):
                continue
            new = extra[~np.isin(extra, candidates)]
            candidates = np.concatenate([candidates, new])
            scores = np.concatenate([scores, np.asarray(score_of(new)).astype(scores.dtype)])
            extra_at = (candidates[:, None] == extra).argmax(axis=0)  # candidates are unique
            head = np.concatenate([head, extra_at])
        return candidates, scores, head


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """The best `n` finite-scored items of one row, by score, ties by item index."""
    cand = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    s = scores[cand]
    order = np.lexsort((cand, -s))
    return np.asarray(cand[order][np.isfinite(s[order])], dtype=np.int64)


def _item_item(neighbours: sp.csr_matrix | None, history: np.ndarray) -> Source | None:
    """The item-item source of `history` (item rows), or None without neighbours."""
    if neighbours is None:
        return None
    return lambda n, exclude: cooccurrence_candidates(neighbours, history, n, exclude)
