"""Ranking features: one definition for offline training and online serving.

The ranker scores retrieval candidates from these features. Training computes them from a
tenant's interactions as of a cut-off time; serving computes them from the online store's
fresh state (the user's recent items, item counters and last-seen times) and the model
version's co-occurrence neighbours. Both call `ranking_features` and pool a history's
neighbours with `cooccurrence_profile` (the `cooccurrence` feature and the item-item
source's candidates), so the same history and item statistics give identical values.
`CandidateFeatures` is the component both call: `batch` for offline lists, `one` for a
request. Offline statistics as of a time come from `StatsIndex`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from atlasrec.evaluation import Interactions

FEATURES = ("retrieval_score", "popularity", "recency", "category_affinity", "cooccurrence")
"""Column order of the feature matrix."""

RECENCY_SCALE_S = 30 * 86_400.0
"""An item last seen this many seconds ago has recency 1/e."""

HISTORY_HALF_LIFE = 10.0
"""In the category affinity, an item this many positions back weighs half the newest."""

AFFINITY_HISTORY = 50
"""The category and co-occurrence affinities look at the user's latest this many items."""

PROFILE_HISTORY = 200
"""The `profile` intent pools the user's latest this many items, unweighted (what the online
store keeps per user: `atlasrec.online_store`'s recent-items cap)."""

NO_CATEGORY = -1
UNKNOWN_ITEM = -1
"""A history entry that the co-occurrence neighbours do not know (it weighs, adds nothing)."""


@dataclass(frozen=True)
class ItemStats:
    """Per-candidate statistics: weighted interaction counts and last-seen epoch seconds."""

    counts: np.ndarray
    last_seen: np.ndarray
    """NaN where the item was never seen."""


def category_affinity(
    history_categories: Sequence[int], candidate_categories: np.ndarray
) -> np.ndarray:
    """Recency-weighted share of the user's history (oldest first) in each candidate's category.

    Only the latest `AFFINITY_HISTORY` entries count. Items without a category count in the
    denominator only; candidates without one get 0.
    """
    cats = np.asarray(history_categories, dtype=np.int64)[-AFFINITY_HISTORY:]
    out = np.zeros(len(candidate_categories), dtype=np.float64)
    if len(cats) == 0:
        return out
    weights = _history_weights(len(cats))
    known = cats != NO_CATEGORY
    if not known.any():
        return out
    order = np.argsort(cats[known], kind="stable")
    sorted_cats = cats[known][order]
    cum = np.concatenate([[0.0], np.cumsum(weights[known][order])])
    left = np.searchsorted(sorted_cats, candidate_categories, side="left")
    right = np.searchsorted(sorted_cats, candidate_categories, side="right")
    out = np.asarray((cum[right] - cum[left]) / weights.sum(), dtype=np.float64)
    out[np.asarray(candidate_categories) == NO_CATEGORY] = 0.0
    return out


@dataclass(frozen=True)
class CooccurrenceProfile:
    """A history's co-occurrence with every row: a weighted mean of its rows.

    Sparse: `columns` (sorted rows of the neighbours matrix) and their `values`; every other
    row scores 0. `window` holds the history entries it was pooled from. One profile per
    request serves both the feature and the source.
    """

    columns: np.ndarray
    values: np.ndarray
    window: np.ndarray

    def affinity(self, candidates: np.ndarray) -> np.ndarray:
        """The candidates' `cooccurrence` feature (rows; `UNKNOWN_ITEM` gets 0)."""
        candidates = np.asarray(candidates, dtype=np.int64)
        out = np.zeros(len(candidates), dtype=np.float64)
        if not len(self.columns):
            return out
        at = np.minimum(np.searchsorted(self.columns, candidates), len(self.columns) - 1)
        found = self.columns[at] == candidates  # columns are >= 0: never UNKNOWN_ITEM
        out[found] = self.values[at[found]]
        return out

    def best(self, n: int, exclude: Sequence[int] | np.ndarray = ()) -> np.ndarray:
        """The `n` rows with the highest positive affinity, best first, ties by row.

        Rows of the window and of `exclude` are left out.
        """
        if n < 1 or not len(self.columns):
            return np.zeros(0, dtype=np.int64)
        drop = np.concatenate([self.window, np.asarray(exclude, dtype=np.int64)])
        keep = (self.values > 0) & ~np.isin(self.columns, drop)
        columns, values = self.columns[keep], self.values[keep]
        return np.asarray(columns[np.lexsort((columns, -values))[:n]], dtype=np.int64)


def cooccurrence_profile(
    neighbours: sp.csr_matrix | None,
    history: Sequence[int] | np.ndarray,
    *,
    window: int = AFFINITY_HISTORY,
    half_life: float | None = HISTORY_HALF_LIFE,
) -> CooccurrenceProfile:
    """The profile of `history` (rows of `neighbours`, oldest first; see `CooccurrenceProfile`).

    Only the latest `window` entries count, each weighing half as much every `half_life`
    positions back (all alike with None); `UNKNOWN_ITEM` entries count in the denominator
    only. Read straight from the CSR arrays: at most `window` rows. The defaults give the
    ranker's `cooccurrence` feature; `history_profile` is the `profile` intent's.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    items = np.asarray(history, dtype=np.int64)[-window:]
    empty = CooccurrenceProfile(np.zeros(0, dtype=np.int64), np.zeros(0), items)
    known = items != UNKNOWN_ITEM
    if neighbours is None or not known.any():
        return empty
    weights = _history_weights(len(items), half_life)
    share = weights[known] / weights.sum()
    starts, ends = neighbours.indptr[items[known]], neighbours.indptr[items[known] + 1]
    lengths = ends - starts
    if not lengths.sum():
        return empty
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    entries = np.arange(int(lengths.sum())) + offsets
    columns, inverse = np.unique(neighbours.indices[entries], return_inverse=True)
    contributions = neighbours.data[entries].astype(np.float64) * np.repeat(share, lengths)
    values = np.bincount(inverse, weights=contributions)
    return CooccurrenceProfile(columns.astype(np.int64), values, items)


def history_profile(
    neighbours: sp.csr_matrix | None, history: Sequence[int] | np.ndarray
) -> CooccurrenceProfile:
    """The `profile` intent's pooling: the plain mean of the latest `PROFILE_HISTORY` rows.

    Ranking by it is EASE's scoring (the sum of the history's rows) with rows cut to their
    strongest neighbours, over what the online store keeps of a history.
    """
    return cooccurrence_profile(neighbours, history, window=PROFILE_HISTORY, half_life=None)


def cooccurrence_affinity(
    neighbours: sp.csr_matrix | None, history: Sequence[int] | np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """Recency-weighted mean co-occurrence of each candidate with the user's history.

    `neighbours` is `atlasrec.models.cooccurrence.item_neighbours`' matrix; `history` (oldest
    first) and `candidates` are its row indices. See `cooccurrence_profile`; everything is 0
    without a matrix.
    """
    return cooccurrence_profile(neighbours, history).affinity(candidates)


def cooccurrence_candidates(
    neighbours: sp.csr_matrix | None,
    history: Sequence[int] | np.ndarray,
    n: int,
    exclude: Sequence[int] | np.ndarray = (),
) -> np.ndarray:
    """The `n` rows of `neighbours` with the highest positive `cooccurrence_affinity`.

    Candidates of the item-item retrieval source: rows other than `exclude` (and `history`),
    best first, ties by row. Only rows some history item points to can score above 0, so
    this reads the history's rows alone (`AFFINITY_HISTORY` * neighbours entries at most).
    """
    return cooccurrence_profile(neighbours, history).best(n, exclude)


def _history_weights(n: int, half_life: float | None = HISTORY_HALF_LIFE) -> np.ndarray:
    """Weights of `n` history entries (oldest first): halving every `half_life` (None: 1)."""
    if half_life is None:
        return np.ones(n, dtype=np.float64)
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    return np.asarray(np.power(0.5, age / half_life), dtype=np.float64)


def ranking_features(
    retrieval_scores: np.ndarray,
    candidate_categories: np.ndarray,
    history_categories: Sequence[int],
    stats: ItemStats,
    now: float,
    cooccurrence: np.ndarray,
) -> np.ndarray:
    """The feature matrix [candidates, len(FEATURES)] (float32) in `FEATURES` order.

    - `retrieval_score`: the retrieval model's cosine similarity;
    - `popularity`: log(1 + weighted interaction count);
    - `recency`: exp(-(now - last seen) / 30 days), 0 for items never seen;
    - `category_affinity`: see `category_affinity`;
    - `cooccurrence`: the candidates' `cooccurrence_affinity`, passed in.
    """
    n = len(retrieval_scores)
    lengths = (len(candidate_categories), len(stats.counts), len(stats.last_seen))
    if lengths != (n, n, n) or len(cooccurrence) != n:
        raise ValueError("features: candidates, categories and stats differ in length")
    counts = np.maximum(np.asarray(stats.counts, dtype=np.float64), 0.0)
    last = np.asarray(stats.last_seen, dtype=np.float64)
    age = np.maximum(now - last, 0.0)
    recency = np.where(np.isnan(last), 0.0, np.exp(-np.nan_to_num(age) / RECENCY_SCALE_S))
    out = np.empty((n, len(FEATURES)), dtype=np.float32)
    out[:, 0] = retrieval_scores
    out[:, 1] = np.log1p(counts)
    out[:, 2] = recency
    out[:, 3] = category_affinity(history_categories, np.asarray(candidate_categories))
    out[:, 4] = cooccurrence
    return out


def category_codes(categories: Sequence[str | None]) -> np.ndarray:
    """Integer category codes per item (sorted names -> 0, 1, ...; None -> NO_CATEGORY)."""
    names = {name: n for n, name in enumerate(sorted({c for c in categories if c is not None}))}
    return np.array([NO_CATEGORY if c is None else names[c] for c in categories], dtype=np.int64)


def last_times(log: Interactions) -> np.ndarray:
    """Each user's latest interaction time (float64; NaN for users without rows)."""
    last = np.full(log.n_users, -np.inf)
    np.maximum.at(last, log.users, log.ts.astype(np.float64))
    return np.where(np.isfinite(last), last, np.nan)


class StatsIndex:
    """Item statistics of an interaction log as of any time, without looking past it."""

    def __init__(self, log: Interactions) -> None:
        order = np.lexsort((log.ts, log.items))
        self._times = np.unique(log.ts)
        self._stride = np.int64(len(self._times) + 1)
        ranks = np.searchsorted(self._times, log.ts[order])
        self._keys = log.items[order] * self._stride + ranks
        self._ts = log.ts[order].astype(np.float64)
        self._cum = np.concatenate([[0.0], np.cumsum(log.weights[order], dtype=np.float64)])
        self._start = np.searchsorted(log.items[order], np.arange(log.n_items + 1))

    def as_of(self, items: np.ndarray, at: np.ndarray, *, inclusive: bool) -> ItemStats:
        """Stats of `items` [n, c] over rows with ts < `at` [n] (ts <= `at` if inclusive)."""
        rank = np.searchsorted(self._times, np.asarray(at), side="right" if inclusive else "left")
        pos = np.searchsorted(self._keys, items * self._stride + rank[:, None], side="left")
        start = self._start[items]
        counts = self._cum[pos] - self._cum[start]
        seen = pos > start
        last = np.where(seen, self._ts[np.maximum(pos - 1, 0)], np.nan)
        return ItemStats(counts=counts, last_seen=last)


@dataclass(frozen=True)
class FeaturesConfig:
    """Which inputs the features look up (a ranker that does not weigh them needs none)."""

    item_stats: bool = True
    """Whether item statistics are read; without, counts are 0 and items never seen."""
    cooccurrence: bool = True
    """Whether the co-occurrence neighbours are pooled; without, the feature is 0."""


class CandidateFeatures:
    """The feature matrices of candidate lists: `batch` offline, `one` per request."""

    def __init__(self, config: FeaturesConfig | None = None) -> None:
        self.config = config or FeaturesConfig()

    def one(
        self,
        scores: np.ndarray,
        candidate_codes: np.ndarray,
        history_codes: Sequence[int],
        stats: ItemStats | None,
        now: float,
        cooccurrence: np.ndarray | None,
    ) -> np.ndarray:
        """One list's features [candidates, len(FEATURES)] (`ranking_features`).

        `stats` and `cooccurrence` are None where the config does not look them up.
        """
        n = len(scores)
        if stats is None or not self.config.item_stats:
            stats = ItemStats(np.zeros(n), np.full(n, np.nan))
        if cooccurrence is None or not self.config.cooccurrence:
            cooccurrence = np.zeros(n)
        return ranking_features(scores, candidate_codes, history_codes, stats, now, cooccurrence)

    def batch(
        self,
        items: np.ndarray,
        scores: np.ndarray,
        mask: np.ndarray,
        histories: Sequence[np.ndarray],
        codes: np.ndarray,
        stats: ItemStats,
        now: np.ndarray,
        neighbours: sp.csr_matrix | None,
    ) -> np.ndarray:
        """Features [users, candidates, len(FEATURES)] of lists of item rows (0 where padded).

        `stats` are [users, candidates]; `neighbours` are the co-occurrence rows (items).
        """
        out = np.zeros((*items.shape, len(FEATURES)), dtype=np.float32)
        pooled = neighbours if self.config.cooccurrence else None
        for row, history in enumerate(histories):
            valid = mask[row]
            out[row, valid] = self.one(
                scores[row, valid],
                codes[items[row, valid]],
                codes[history].tolist(),
                ItemStats(stats.counts[row, valid], stats.last_seen[row, valid]),
                float(now[row]),
                cooccurrence_affinity(pooled, history, items[row, valid]),
            )
        return out
