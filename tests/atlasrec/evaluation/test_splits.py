"""Interactions and splits: validation, hand-built cases and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.errors import InvalidInputError
from atlasrec.evaluation import Interactions, Split, random_user_split, temporal_leave_last_out

# --- Interactions -----------------------------------------------------------------------------


def test_from_arrays_defaults_and_freezes() -> None:
    data = Interactions.from_arrays([0, 1, 1], [2, 0, 2])
    assert (data.n_users, data.n_items, len(data)) == (2, 3, 3)
    assert data.ts.tolist() == [0, 0, 0]
    assert data.weights.dtype == np.float32 and data.weights.tolist() == [1.0, 1.0, 1.0]
    assert data.users.dtype == np.int64 and not data.users.flags.writeable
    with pytest.raises(ValueError):
        data.items[0] = 1


def test_from_arrays_copies_its_input() -> None:
    users = np.array([0, 1])
    data = Interactions.from_arrays(users, [0, 0])
    users[0] = 1
    assert data.users.tolist() == [0, 1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"users": [0, 1], "items": [0]},
        {"users": [0, -1], "items": [0, 0]},
        {"users": [0, 1], "items": [0, 3], "n_items": 3},
        {"users": [0, 2], "items": [0, 0], "n_users": 2},
        {"users": [0.0, 1.0], "items": [0, 0]},
        {"users": [[0, 1]], "items": [[0, 0]]},
        {"users": [0, 1], "items": [0, 0], "ts": [1.5, 2.0]},
        {"users": [0, 1], "items": [0, 0], "weights": [1.0, float("nan")]},
        {"users": [0, 1], "items": [0, 0], "weights": [1.0]},
        {"users": [0, 1], "items": [0, 0], "n_users": -1},
    ],
)
def test_from_arrays_rejects_bad_input(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        Interactions.from_arrays(**kwargs)  # type: ignore[arg-type]


def test_constructor_validates_too() -> None:
    ok = np.array([0], dtype=np.int64)
    with pytest.raises(InvalidInputError):
        Interactions(ok, ok, ok, np.ones(1, dtype=np.float64), 1, 1)
    with pytest.raises(InvalidInputError):
        Interactions(ok, ok, ok, np.ones(1, dtype=np.float32), 1, 0)


def test_to_csr_collapses_duplicates_and_counts() -> None:
    data = Interactions.from_arrays(
        [0, 0, 0, 2], [1, 1, 3, 0], weights=[2.0, 3.0, 1.0, 4.0], n_users=4, n_items=5
    )
    binary = data.to_csr()
    assert binary.shape == (4, 5) and binary.nnz == 3
    assert binary.toarray().tolist()[0] == [0, 1, 0, 1, 0]
    weighted = data.to_csr(binary=False).toarray()
    assert weighted[0, 1] == 5.0 and weighted[0, 3] == 1.0 and weighted[2, 0] == 4.0
    assert data.user_counts().tolist() == [3, 0, 1, 0]
    assert data.user_counts(distinct=True).tolist() == [2, 0, 1, 0]
    assert data.item_counts().tolist() == [1, 2, 0, 1, 0]
    assert data.item_counts(distinct=True).tolist() == [1, 1, 0, 1, 0]


def test_empty_interactions() -> None:
    data = Interactions.from_arrays([], [], n_users=3, n_items=2)
    assert len(data) == 0 and data.to_csr().nnz == 0
    assert data.user_counts(distinct=True).tolist() == [0, 0, 0]
    assert temporal_leave_last_out(data).test == {}
    assert random_user_split(data).test == {}


# --- temporal leave-last-out --------------------------------------------------------------------


def test_leave_last_out_hand_built() -> None:
    rows = [
        # user, item, ts
        (0, 10, 1),
        (0, 11, 3),  # user 0: latest is item 11
        (0, 12, 2),
        (1, 4, 9),  # user 1: one interaction -> not tested, kept in train
        (2, 5, 1),
        (2, 6, 2),
        (2, 5, 3),  # user 2: latest is item 5; its earlier row goes too
        (3, 1, 5),
        (3, 2, 5),  # user 3: tie at ts 5 -> the later row (item 2) is the latest
        (4, 7, 1),
        (4, 7, 2),  # user 4: one distinct item -> not tested
    ]
    users, items, ts = (np.array(col) for col in zip(*rows, strict=True))
    data = Interactions.from_arrays(users, items, ts, n_users=6, n_items=13)
    split = temporal_leave_last_out(data)
    assert {u: t.tolist() for u, t in split.test.items()} == {0: [11], 2: [5], 3: [2]}
    train = sorted(zip(split.train.users.tolist(), split.train.items.tolist(), strict=True))
    assert train == [(0, 10), (0, 12), (1, 4), (2, 6), (3, 1), (4, 7), (4, 7)]
    assert (split.train.n_users, split.train.n_items) == (6, 13)
    assert split.test_users().tolist() == [0, 2, 3]


@st.composite
def logs(draw: st.DrawFn, max_users: int = 8, max_items: int = 10) -> Interactions:
    n_users = draw(st.integers(1, max_users))
    n_items = draw(st.integers(1, max_items))
    n = draw(st.integers(0, 60))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    return Interactions.from_arrays(users, items, ts, n_users=n_users, n_items=n_items)


def _pairs(data: Interactions) -> set[tuple[int, int]]:
    return set(zip(data.users.tolist(), data.items.tolist(), strict=True))


def _check_common(data: Interactions, split: Split) -> None:
    train_pairs = _pairs(split.train)
    test_pairs = {(u, int(i)) for u, items in split.test.items() for i in items}
    assert not train_pairs & test_pairs
    # train is the input minus every row of a held-out pair
    assert train_pairs | test_pairs == _pairs(data)
    kept = sum(
        1 for p in zip(data.users.tolist(), data.items.tolist(), strict=True) if p not in test_pairs
    )
    assert len(split.train) == kept
    distinct = data.user_counts(distinct=True)
    assert set(split.test) == {u for u in range(data.n_users) if distinct[u] >= 2}
    for u, items in split.test.items():
        assert items.dtype == np.int64 and items.size >= 1
        assert items.tolist() == sorted(set(items.tolist()))
        assert split.train.user_counts()[u] >= 1
    assert (split.train.n_users, split.train.n_items) == (data.n_users, data.n_items)


@settings(max_examples=150, deadline=None)
@given(logs())
def test_leave_last_out_invariants(data: Interactions) -> None:
    split = temporal_leave_last_out(data)
    _check_common(data, split)
    for u, items in split.test.items():
        assert items.size == 1
        rows = np.flatnonzero(data.users == u)
        latest = max(rows, key=lambda r: (data.ts[r], r))  # ties: the later row
        assert items[0] == data.items[latest]


# --- random per-user split ----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(logs(), st.sampled_from([0.1, 0.25, 0.5, 0.8]), st.integers(0, 3))
def test_random_split_invariants(data: Interactions, fraction: float, seed: int) -> None:
    split = random_user_split(data, test_fraction=fraction, seed=seed)
    _check_common(data, split)
    distinct = data.user_counts(distinct=True)
    for u, items in split.test.items():
        d = int(distinct[u])
        assert 1 <= items.size <= d - 1
        # round(fraction * d), unless clipped into [1, d - 1]
        if 1 < fraction * d < d - 1:
            assert abs(items.size - fraction * d) <= 0.5
    again = random_user_split(data, test_fraction=fraction, seed=seed)
    assert {u: t.tolist() for u, t in again.test.items()} == {
        u: t.tolist() for u, t in split.test.items()
    }


def test_random_split_fraction_and_seed() -> None:
    rng = np.random.default_rng(7)
    users = np.repeat(np.arange(50), 20)
    items = np.concatenate([rng.choice(200, size=20, replace=False) for _ in range(50)])
    data = Interactions.from_arrays(users, items, n_items=200)
    split = random_user_split(data, test_fraction=0.25, seed=1)
    assert all(t.size == 5 for t in split.test.values())  # 25% of 20 distinct items
    assert len(split.train) == 50 * 15
    other = random_user_split(data, test_fraction=0.25, seed=2)
    assert any(split.test[u].tolist() != other.test[u].tolist() for u in split.test), (
        "a different seed should hold out different items"
    )


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_random_split_rejects_bad_fraction(fraction: float) -> None:
    data = Interactions.from_arrays([0, 0], [0, 1])
    with pytest.raises(InvalidInputError):
        random_user_split(data, test_fraction=fraction)
