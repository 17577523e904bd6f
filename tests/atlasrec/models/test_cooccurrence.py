"""Item-item co-occurrence neighbours."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.models.cooccurrence import item_neighbours


def seqs(*users: list[int]) -> list[np.ndarray]:
    return [np.asarray(u, dtype=np.int64) for u in users]


def test_values_are_the_cosine_of_the_items_user_sets() -> None:
    # item 0: users a, b, c; item 1: users a, b; item 2: user c; item 3: nobody
    m = item_neighbours(seqs([0, 1], [1, 0, 0], [0, 2]), 4).toarray()
    assert m[0, 1] == pytest.approx(2 / math.sqrt(3 * 2))
    assert m[0, 2] == pytest.approx(1 / math.sqrt(3 * 1))
    assert m[1, 2] == 0.0 and np.all(np.diag(m) == 0.0) and not m[3].any()
    np.testing.assert_allclose(m, m.T)  # untruncated: symmetric


def test_each_item_keeps_its_k_strongest_neighbours() -> None:
    # item 0 co-occurs with 1 (3 users), 2 (2 users), 3 (1 user)
    m = item_neighbours(seqs([0, 1, 2, 3], [0, 1, 2], [0, 1]), 4, k=2).toarray()
    assert np.count_nonzero(m[0]) == 2 and m[0, 1] > m[0, 2] > 0 and m[0, 3] == 0
    with pytest.raises(ValueError, match="k must"):
        item_neighbours(seqs([0]), 1, k=0)


def test_no_interactions_give_an_empty_matrix() -> None:
    m = item_neighbours(seqs([], []), 5)
    assert m.shape == (5, 5) and m.nnz == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 11), max_size=8), min_size=1, max_size=10))
def test_truncation_keeps_the_largest_entries_of_each_row(users: list[list[int]]) -> None:
    full = item_neighbours(seqs(*users), 12, k=12).toarray()
    top = item_neighbours(seqs(*users), 12, k=3).toarray()
    for row in range(12):
        kept = top[row][top[row] > 0]
        assert len(kept) == min(3, np.count_nonzero(full[row]))
        dropped = full[row][(full[row] > 0) & (top[row] == 0)]
        assert all(d <= kept.min() + 1e-7 for d in dropped)
        np.testing.assert_allclose(top[row][top[row] > 0], full[row][top[row] > 0], rtol=1e-6)
