"""Item-item co-occurrence neighbours: the tenant-local signal of the `cooccurrence` feature.

Two items are similar when the same users interacted with both (the cosine of their user
sets, the item-kNN signal EASE and item-based collaborative filtering rank by). Each item
keeps its `NEIGHBOURS` strongest neighbours, which bounds the matrix a model version ships
to `NEIGHBOURS` entries per item. Built from raw interactions, it stays with the tenant's
model in the tenant's region and is never part of a DP model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

NEIGHBOURS = 100
"""Neighbours kept per item."""


def item_neighbours(
    sequences: Sequence[np.ndarray], n_items: int, k: int = NEIGHBOURS
) -> sp.csr_matrix:
    """[n_items, n_items] float32 CSR: row i holds item i's `k` most co-occurring items.

    `sequences` are the users' item indices (duplicates count once). The value is the cosine
    of the two items' user sets; the diagonal is empty.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    lengths = [len(s) for s in sequences]
    users = np.repeat(np.arange(len(sequences)), lengths)
    items = np.concatenate(sequences).astype(np.int64) if sum(lengths) else np.zeros(0, np.int64)
    x = sp.csr_matrix(
        (np.ones(len(items), np.float32), (users, items)), shape=(len(sequences), n_items)
    )
    x.data[:] = 1.0  # a repeated (user, item) pair counts once
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
