"""Train/test splits that hold out (user, item) pairs per user.

Every split keeps the full catalog (``n_users`` / ``n_items`` of the input) and guarantees that
no held-out (user, item) pair appears in train: all rows of a held-out pair, repeats included,
are removed from train. Only users with at least 2 distinct items are tested, so every tested
user keeps at least one item in train. A held-out item that no longer occurs anywhere in train
is kept in the test set: it is legitimately unrecommendable and counts as a miss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atlasrec.errors import InvalidInputError
from atlasrec.evaluation.data import IntArray, Interactions


@dataclass(frozen=True, eq=False)
class Split:
    """A named split: the training log and, per tested user, the held-out item indices.

    ``test`` maps a user index to a sorted, duplicate-free, non-empty int64 array of items.
    """

    name: str
    train: Interactions
    test: dict[int, IntArray]

    def test_users(self) -> IntArray:
        """The tested users, sorted ascending."""
        return np.array(sorted(self.test), dtype=np.int64)

    def truth(self, users: IntArray | None = None) -> list[IntArray]:
        """The held-out items of ``users`` (default: `test_users`), in that order."""
        order = self.test_users() if users is None else users
        return [self.test[int(u)] for u in order]


def temporal_leave_last_out(data: Interactions) -> Split:
    """Hold out each user's latest item.

    The latest interaction is the row with the largest ``ts``; among rows with equal ``ts`` the
    one that comes last in the input wins (deterministic). Users with fewer than 2 distinct
    items keep everything in train and are not tested. Earlier repeats of the held-out pair are
    removed from train too.
    """
    n = len(data)
    if n == 0:
        return Split("temporal-leave-last-out", data, {})
    order = np.lexsort((np.arange(n), data.ts, data.users))
    sorted_users = data.users[order]
    is_last = np.ones(n, dtype=bool)
    is_last[:-1] = sorted_users[1:] != sorted_users[:-1]
    last_rows = order[is_last]
    users = data.users[last_rows]
    items = data.items[last_rows]
    tested = data.user_counts(distinct=True)[users] >= 2
    users, items = users[tested], items[tested]
    held = users * np.int64(data.n_items) + items
    train = data.subset(~np.isin(data.pair_keys(), held))
    test = {
        int(u): _frozen(np.array([i], dtype=np.int64)) for u, i in zip(users, items, strict=True)
    }
    return Split("temporal-leave-last-out", train, test)


def random_user_split(data: Interactions, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """Hold out a random ``test_fraction`` of each user's distinct items.

    A user with ``d >= 2`` distinct items gets ``round(test_fraction * d)`` items held out
    (rounding half up), clipped to ``[1, d - 1]``; users with ``d < 2`` are not tested. The
    choice depends only on ``data`` and ``seed`` (numpy ``default_rng``).
    """
    if not 0.0 < test_fraction < 1.0:
        raise InvalidInputError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    name = f"random-user(test_fraction={test_fraction}, seed={seed})"
    if len(data) == 0:
        return Split(name, data, {})
    keys = np.unique(data.pair_keys())  # sorted: by user, then item
    key_users = keys // data.n_items
    counts = np.bincount(key_users, minlength=data.n_users)
    n_test = np.where(
        counts >= 2,
        np.clip(np.floor(test_fraction * counts + 0.5), 1, np.maximum(counts - 1, 1)),
        0,
    ).astype(np.int64)
    rng = np.random.default_rng(seed)
    order = np.lexsort(
        (rng.random(size=int(keys.shape[0])), key_users)
    )  # by user, random within user
    starts = np.cumsum(counts) - counts
    ordered_users = key_users[order]
    rank = np.arange(keys.shape[0]) - starts[ordered_users]
    held = np.sort(keys[order[rank < n_test[ordered_users]]])
    train = data.subset(~np.isin(data.pair_keys(), held))
    held_users = held // data.n_items
    held_items = held % data.n_items
    bounds = np.flatnonzero(np.diff(held_users)) + 1
    test = {
        int(group_users[0]): _frozen(group_items)
        for group_users, group_items in zip(
            np.split(held_users, bounds), np.split(held_items, bounds), strict=True
        )
        if group_users.size
    }
    return Split(name, train, test)


def _frozen(arr: IntArray) -> IntArray:
    arr.flags.writeable = False
    return arr
