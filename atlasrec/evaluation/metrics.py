"""Top-k ranking metrics with binary relevance.

Conventions shared by every per-user metric:

- ``ranked`` is an int64 array of shape ``(n_users, width)``; row ``u`` lists item indices best
  first. ``-1`` is padding and never relevant. Apart from padding a row must not repeat an item.
- ``truth[u]`` holds the relevant (held-out) items of row ``u``; it must be non-empty and is
  treated as a set (duplicates are ignored). Write ``T_u`` for that set.
- ``k`` (default: ``width``) must satisfy ``1 <= k <= width``; only ``ranked[:, :k]`` is used.
  ``rel_u(j)`` is 1 when the item at 1-based position ``j`` is in ``T_u``, else 0.

The per-user functions return a float64 array of length ``n_users``; the caller averages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from atlasrec.errors import InvalidInputError
from atlasrec.evaluation.data import FloatArray, IntArray

BoolArray = npt.NDArray[np.bool_]


def recall_at_k(
    ranked: npt.ArrayLike, truth: Sequence[npt.ArrayLike], k: int | None = None
) -> FloatArray:
    """Recall@k: ``|top-k ∩ T_u| / |T_u|`` (the standard denominator, not ``min(|T_u|, k)``).

    It can therefore stay below 1 for a perfect ranking when ``|T_u| > k``.
    """
    hits, n_truth = _hits(ranked, truth, k)
    recall: FloatArray = hits.sum(axis=1) / n_truth
    return recall


def ndcg_at_k(
    ranked: npt.ArrayLike, truth: Sequence[npt.ArrayLike], k: int | None = None
) -> FloatArray:
    """NDCG@k: ``DCG / IDCG`` with ``DCG = sum_{j=1..k} rel_u(j) / log2(j + 1)``.

    ``IDCG = sum_{j=1..min(|T_u|, k)} 1 / log2(j + 1)``: the DCG of a ranking that puts
    relevant items in every one of its first ``min(|T_u|, k)`` slots. A perfect ranking scores 1.
    """
    hits, n_truth = _hits(ranked, truth, k)
    width = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, width + 2, dtype=np.float64))
    ideal = np.cumsum(discounts)[np.minimum(n_truth, width) - 1]
    ndcg: FloatArray = (hits @ discounts) / ideal
    return ndcg


def map_at_k(
    ranked: npt.ArrayLike, truth: Sequence[npt.ArrayLike], k: int | None = None
) -> FloatArray:
    """AP@k per user (mean over users gives MAP@k).

    ``AP@k = sum_{j=1..k} P@j * rel_u(j) / min(|T_u|, k)`` where ``P@j`` is the fraction of
    relevant items among the first ``j``. A perfect ranking scores 1.
    """
    hits, n_truth = _hits(ranked, truth, k)
    width = hits.shape[1]
    precision = np.cumsum(hits, axis=1) / np.arange(1, width + 1, dtype=np.float64)
    ap: FloatArray = (precision * hits).sum(axis=1) / np.minimum(n_truth, width)
    return ap


def coverage_at_k(ranked: npt.ArrayLike, n_items: int, k: int | None = None) -> float:
    """Catalog coverage: distinct items in ``ranked[:, :k]`` (padding excluded) / ``n_items``.

    A single number for the whole set of users (0.0 when there are no users).
    """
    arr = _ranked(ranked, k)
    if n_items < 1:
        raise InvalidInputError(f"n_items must be >= 1, got {n_items}")
    valid = arr[arr >= 0]
    if valid.size and int(valid.max()) >= n_items:
        raise InvalidInputError(f"ranked holds item {int(valid.max())} >= n_items={n_items}")
    return float(np.unique(valid).size / n_items)


def _ranked(ranked: npt.ArrayLike, k: int | None) -> IntArray:
    arr = np.asarray(ranked)
    if arr.ndim != 2:
        raise InvalidInputError(f"ranked must be 2-D (users x k), got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise InvalidInputError(f"ranked must hold integers, got dtype {arr.dtype}")
    width = arr.shape[1]
    if k is None:
        k = width
    if isinstance(k, bool) or not 1 <= k <= width:
        raise InvalidInputError(f"k must lie in [1, {width}], got {k!r}")
    arr = arr[:, :k].astype(np.int64, copy=False)
    if arr.size and int(arr.min()) < -1:
        raise InvalidInputError("ranked may hold item indices >= 0 and -1 padding only")
    return arr


def _hits(
    ranked: npt.ArrayLike, truth: Sequence[npt.ArrayLike], k: int | None
) -> tuple[BoolArray, IntArray]:
    """The (n_users, k) relevance matrix and ``|T_u|`` per user."""
    arr = _ranked(ranked, k)
    n_rows = arr.shape[0]
    if len(truth) != n_rows:
        raise InvalidInputError(f"truth has {len(truth)} users but ranked has {n_rows} rows")
    sets = [np.unique(np.asarray(t, dtype=np.int64).ravel()) for t in truth]
    n_truth = np.array([s.size for s in sets], dtype=np.int64)
    if n_rows == 0:
        return np.zeros(arr.shape, dtype=bool), n_truth
    if int(n_truth.min()) == 0:
        raise InvalidInputError("every user needs at least one relevant item")
    flat_truth = np.concatenate(sets)
    if int(flat_truth.min()) < 0:
        raise InvalidInputError("relevant items must be indices >= 0")
    sorted_rows = np.sort(arr, axis=1)
    if np.any((sorted_rows[:, 1:] == sorted_rows[:, :-1]) & (sorted_rows[:, 1:] >= 0)):
        raise InvalidInputError("a ranked row repeats an item")
    # One int64 key per (row, item); the truth keys come out sorted (rows ascending, sets sorted).
    stride = np.int64(max(int(arr.max()), int(flat_truth.max())) + 1)
    rows = np.arange(n_rows, dtype=np.int64)
    truth_keys = np.repeat(rows, n_truth) * stride + flat_truth
    ranked_keys = rows[:, None] * stride + arr
    pos = np.minimum(np.searchsorted(truth_keys, ranked_keys), truth_keys.size - 1)
    hits = (truth_keys[pos] == ranked_keys) & (arr >= 0)
    return hits, n_truth
