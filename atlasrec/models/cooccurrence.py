"""Item-item neighbours: the tenant-local signal of the `cooccurrence` feature.

Row i of the matrix holds how strongly having interacted with item i points to each other
item. The weights are EASE's item-item regression weights (Steck, WWW 2019;
`atlasrec.evaluation.ease_weights`), which discount what other history items already
explain, computed over the catalog's head: the `EASE_HEAD` items with the most users (the
whole catalog when it is smaller). EASE needs a dense head² inverse, so the head bounds the
memory whatever the catalog's size; items outside it have no neighbours and are no one's
neighbour (the two-tower model still retrieves them). On ml-latest-small, EASE over the
500 most-interacted of 9,742 items scores as well as over all of them, and both well above
the cosine of user sets over all items (`docs/benchmarks.md`, neighbours study); the
cosine weighting stays for that comparison.

Each item keeps its `NEIGHBOURS` strongest positive weights, which bounds what a model
version ships to `NEIGHBOURS` entries per item. Built from raw interactions, the matrix stays
with the tenant's model in the tenant's region and is never part of a DP model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp

from atlasrec.evaluation import EASEConfig, ease_weights

NEIGHBOURS = 100
"""Neighbours kept per item."""

EASE_HEAD = 12_000
"""Items (the most-interacted) given EASE weights (a dense float64 head² matrix: 1.15 GB)."""

EASE_L2 = EASEConfig().l2
"""EASE's ridge penalty (the evaluation baseline's)."""

_ROW_BLOCK = 1024

Weighting = Literal["ease", "cosine"]


def head_size(n_items: int, head: int = EASE_HEAD) -> int:
    """How many of a catalog's items `item_neighbours` gives EASE weights."""
    return min(n_items, head)


def item_neighbours(
    sequences: Sequence[np.ndarray],
    n_items: int,
    k: int = NEIGHBOURS,
    weighting: Weighting = "ease",
    head: int = EASE_HEAD,
) -> sp.csr_matrix:
    """[n_items, n_items] float32 CSR: row i holds item i's `k` strongest positive weights.

    `sequences` are the users' item indices (duplicates count once). With `"ease"`, only the
    `head` items with the most users (ties: lower index) have rows and columns; `"cosine"`
    covers every item. The diagonal is empty.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if head < 1:
        raise ValueError(f"head must be >= 1, got {head}")
    lengths = [len(s) for s in sequences]
    users = np.repeat(np.arange(len(sequences)), lengths)
    items = np.concatenate(sequences).astype(np.int64) if sum(lengths) else np.zeros(0, np.int64)
    x = sp.csr_matrix(
        (np.ones(len(items), np.float32), (users, items)), shape=(len(sequences), n_items)
    )
    x.data[:] = 1.0  # a repeated (user, item) pair counts once
    if x.nnz == 0:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    if weighting == "ease":  # over the head (every item of a catalog that fits)
        counts = np.asarray(x.sum(axis=0)).ravel()
        top = np.sort(np.argsort(-counts, kind="stable")[:head])
        return _strongest_dense(ease_weights(x[:, top].tocsr(), EASE_L2), k, top, n_items)
    gram = (x.T @ x).tocsr()
    inverse_norm = 1.0 / np.sqrt(np.maximum(gram.diagonal(), 1.0)).astype(np.float32)
    gram.setdiag(0.0)
    gram.eliminate_zeros()
    cosine = (sp.diags(inverse_norm) @ gram @ sp.diags(inverse_norm)).tocsr()
    return _strongest(cosine, k)


def _strongest(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's `k` largest entries (ties broken by column index)."""
    keep = np.zeros(matrix.nnz, dtype=bool)
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if end - start <= k:
            keep[start:end] = True
            continue
        order = np.lexsort((matrix.indices[start:end], -matrix.data[start:end]))[:k]
        keep[start + order] = True
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    out = sp.csr_matrix(
        (matrix.data[keep].astype(np.float32), (rows[keep], matrix.indices[keep])),
        shape=matrix.shape,
    )
    out.sort_indices()
    return out


def _strongest_dense(weights: np.ndarray, k: int, index: np.ndarray, size: int) -> sp.csr_matrix:
    """Each row's `k` largest positive entries of a dense matrix, as [size, size] float32 CSR.

    Row and column j of `weights` are row and column `index[j]` of the result.
    """
    n = weights.shape[0]
    k = min(k, n)
    parts = []
    for lo in range(0, n, _ROW_BLOCK):  # one block of rows at a time: no second dense copy
        block = weights[lo : lo + _ROW_BLOCK]
        if k < n:
            top: np.ndarray = np.argpartition(-block, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(n), block.shape)
        values = np.take_along_axis(block, top, 1)
        keep = values > 0
        block_rows = np.repeat(np.arange(lo, lo + len(block)), k).reshape(len(block), k)
        parts.append((values[keep].astype(np.float32), block_rows[keep], top[keep]))
    data, rows, cols = (np.concatenate(p) for p in zip(*parts, strict=True))
    out = sp.csr_matrix((data, (index[rows], index[cols])), shape=(size, size), dtype=np.float32)
    out.sort_indices()
    return out
