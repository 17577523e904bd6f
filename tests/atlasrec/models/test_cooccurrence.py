"""Item-item neighbours: EASE weights over the catalog's head, and cosine for comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.models.cooccurrence import (
    EASE_HEAD,
    EASE_L2,
    Weighting,
    head_size,
    item_neighbours,
)


def seqs(*users: list[int]) -> list[np.ndarray]:
    return [np.asarray(u, dtype=np.int64) for u in users]


def test_values_are_the_cosine_of_the_items_user_sets() -> None:
    # item 0: users a, b, c; item 1: users a, b; item 2: user c; item 3: nobody
    m = item_neighbours(seqs([0, 1], [1, 0, 0], [0, 2]), 4, weighting="cosine").toarray()
    assert m[0, 1] == pytest.approx(2 / math.sqrt(3 * 2))
    assert m[0, 2] == pytest.approx(1 / math.sqrt(3 * 1))
    assert m[1, 2] == 0.0 and np.all(np.diag(m) == 0.0) and not m[3].any()
    np.testing.assert_allclose(m, m.T)  # untruncated: symmetric


def test_each_item_keeps_its_k_strongest_neighbours() -> None:
    # item 0 co-occurs with 1 (3 users), 2 (2 users), 3 (1 user)
    m = item_neighbours(seqs([0, 1, 2, 3], [0, 1, 2], [0, 1]), 4, k=2, weighting="cosine")
    m = m.toarray()
    assert np.count_nonzero(m[0]) == 2 and m[0, 1] > m[0, 2] > 0 and m[0, 3] == 0
    with pytest.raises(ValueError, match="k must"):
        item_neighbours(seqs([0]), 1, k=0)


@pytest.mark.parametrize("weighting", ["ease", "cosine"])
def test_no_interactions_give_an_empty_matrix(weighting: Weighting) -> None:
    m = item_neighbours(seqs([], []), 5, weighting=weighting)
    assert m.shape == (5, 5) and m.nnz == 0


def test_ease_weights_solve_the_ridge_regression_of_each_item_on_the_others() -> None:
    rng = np.random.default_rng(3)
    users = [rng.choice(9, size=int(rng.integers(1, 6)), replace=False) for _ in range(14)]
    x = np.zeros((14, 9))
    for u, items in enumerate(users):
        x[u, items] = 1.0
    m = item_neighbours(seqs(*[list(u) for u in users]), 9, k=9, weighting="ease").toarray()
    for j in range(9):  # column j: ridge regression of item j on every other item
        others = [i for i in range(9) if i != j]
        a = x[:, others]
        w = np.linalg.solve(a.T @ a + EASE_L2 * np.eye(8), a.T @ x[:, j])
        expected = np.where(w > 0, w, 0.0)  # only positive weights are kept
        np.testing.assert_allclose(m[others, j], expected, rtol=1e-4, atol=1e-9)
    assert np.all(np.diag(m) == 0.0)


def test_ease_is_the_default_and_the_head_bounds_it() -> None:
    users = seqs([0, 1, 2], [1, 2], [0, 3])
    default = item_neighbours(users, 4)
    assert (default != item_neighbours(users, 4, weighting="ease")).nnz == 0
    assert (default != item_neighbours(users, 4, weighting="cosine")).nnz > 0
    assert head_size(4) == 4 and head_size(EASE_HEAD + 1) == EASE_HEAD
    with pytest.raises(ValueError, match="head must"):
        item_neighbours(users, 4, head=0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 9), max_size=7), min_size=1, max_size=12),
    st.integers(1, 10),
)
def test_beyond_the_head_ease_covers_the_most_interacted_items_alone(
    users: list[list[int]], head: int
) -> None:
    n = 10
    got = item_neighbours(seqs(*users), n, k=n, head=head).toarray()
    counts = np.zeros(n, dtype=np.int64)
    for items in users:
        counts[sorted(set(items))] += 1
    top = sorted(range(n), key=lambda i: (-counts[i], i))[:head]  # ties: lower index
    outside = [i for i in range(n) if i not in top]
    assert not got[outside].any() and not got[:, outside].any()
    # the head's block is EASE over a catalog of the head items alone
    relabel = {item: pos for pos, item in enumerate(sorted(top))}
    alone = [[relabel[i] for i in items if i in relabel] for items in users]
    want = item_neighbours(seqs(*alone), len(top), k=n).toarray()
    np.testing.assert_allclose(got[np.ix_(sorted(top), sorted(top))], want, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 11), max_size=8), min_size=1, max_size=10),
    st.sampled_from(["ease", "cosine"]),
)
def test_truncation_keeps_the_largest_entries_of_each_row(
    users: list[list[int]], weighting: Weighting
) -> None:
    full = item_neighbours(seqs(*users), 12, k=12, weighting=weighting).toarray()
    top = item_neighbours(seqs(*users), 12, k=3, weighting=weighting).toarray()
    for row in range(12):
        kept = top[row][top[row] > 0]
        assert len(kept) == min(3, np.count_nonzero(full[row]))
        dropped = full[row][(full[row] > 0) & (top[row] == 0)]
        assert all(d <= kept.min() + 1e-7 for d in dropped)
        np.testing.assert_allclose(top[row][top[row] > 0], full[row][top[row] > 0], rtol=1e-6)
