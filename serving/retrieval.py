"""Per-tenant retrieval indexes (faiss), their type chosen by catalog size.

- up to `EXACT_MAX_ITEMS` items: `IndexFlatIP`, exact inner product (4 * dim bytes per item:
  256 B at dim 64);
- larger catalogs: `IndexHNSWFlat` (M=32, inner product): approximate, sub-linear search;
  per item 4 * dim bytes of vectors plus about 2 * M * 4 = 256 B of graph links, so about
  512 B per item at dim 64 (about 41 GB for the largest tenant's 80M items: a sharded index
  at that size).

Indexes are built once per snapshot and never mutated afterwards, so concurrent searches
are safe; new items are searched exactly from the snapshot's delta until the next rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

EXACT_MAX_ITEMS = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


@dataclass(frozen=True)
class VectorIndex:
    """A built faiss index over positions 0..n-1 and what kind it is."""

    index: faiss.Index
    kind: str
    size: int

    def search(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions) of the `n` best items for a unit query vector [dim]."""
        if self.size == 0 or n <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores, found = self.index.search(
            query.reshape(1, -1).astype(np.float32), min(n, self.size)
        )
        keep = found[0] >= 0
        return scores[0][keep], found[0][keep].astype(np.int64)


def build_index(unit: np.ndarray, *, exact_max: int = EXACT_MAX_ITEMS) -> VectorIndex:
    """An inner-product index over unit-norm item vectors [n, dim]."""
    n, dim = unit.shape
    if n <= exact_max:
        index: faiss.Index = faiss.IndexFlatIP(dim)
        kind = "flat"
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        kind = "hnsw"
    if n:
        index.add(np.ascontiguousarray(unit, dtype=np.float32))
    return VectorIndex(index, kind, n)
