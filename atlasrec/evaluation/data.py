"""Interaction logs as parallel numpy arrays over dense user and item indices."""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp  # type: ignore[import-untyped, unused-ignore]

from atlasrec.errors import InvalidInputError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
WeightArray = npt.NDArray[np.float32]

_INT64_MAX = int(np.iinfo(np.int64).max)


@dataclass(frozen=True, eq=False)
class Interactions:
    """An interaction log: row ``r`` says user ``users[r]`` met item ``items[r]`` at ``ts[r]``.

    Users and items are dense indices (``0..n_users-1`` and ``0..n_items-1``); a user or item
    without any row is allowed (the catalog can be larger than the log). The same (user, item)
    pair may occur on several rows. Build it with `from_arrays`, which validates, copies and
    freezes the arrays; the constructor itself only validates.
    """

    users: IntArray
    items: IntArray
    ts: IntArray
    weights: WeightArray
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise InvalidInputError(f"{name} must be a non-negative int, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name, dtype in (
            ("users", np.int64),
            ("items", np.int64),
            ("ts", np.int64),
            ("weights", np.float32),
        ):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1:
                raise InvalidInputError(f"{name} must be a 1-D {np.dtype(dtype).name} array")
        n = self.users.shape[0]
        if not self.items.shape[0] == self.ts.shape[0] == self.weights.shape[0] == n:
            raise InvalidInputError(
                "users, items, ts and weights must have the same length, got "
                f"{n}, {self.items.shape[0]}, {self.ts.shape[0]}, {self.weights.shape[0]}"
            )
        _check_range("users", self.users, self.n_users)
        _check_range("items", self.items, self.n_items)
        if not np.all(np.isfinite(self.weights)):
            raise InvalidInputError("weights must be finite")
        if self.n_users * self.n_items > _INT64_MAX:
            raise InvalidInputError("n_users * n_items does not fit in int64")

    @classmethod
    def from_arrays(
        cls,
        users: npt.ArrayLike,
        items: npt.ArrayLike,
        ts: npt.ArrayLike | None = None,
        weights: npt.ArrayLike | None = None,
        *,
        n_users: int | None = None,
        n_items: int | None = None,
    ) -> Interactions:
        """Validate, copy and freeze parallel arrays into an `Interactions`.

        ``users``, ``items`` and ``ts`` must hold integers (``ts`` defaults to all zeros, so the
        row order decides among equal timestamps); ``weights`` must be finite reals and
        defaults to ones. ``n_users`` / ``n_items`` default to the largest index plus one.
        Raises `InvalidInputError` on any mismatch in shape, type or range.
        """
        u = _as_int64("users", users)
        i = _as_int64("items", items)
        n = u.shape[0]
        t = np.zeros(n, dtype=np.int64) if ts is None else _as_int64("ts", ts)
        if weights is None:
            w = np.ones(n, dtype=np.float32)
        else:
            raw = np.asarray(weights)
            if raw.ndim != 1:
                raise InvalidInputError("weights must be 1-D")
            if raw.size and (raw.dtype.kind not in "iuf"):
                raise InvalidInputError(f"weights must be real numbers, got dtype {raw.dtype}")
            w = raw.astype(np.float32, copy=True)
        nu = (int(u.max()) + 1 if n else 0) if n_users is None else _as_count("n_users", n_users)
        ni = (
            (int(i.max()) + 1 if i.size else 0)
            if n_items is None
            else _as_count("n_items", n_items)
        )
        for arr in (u, i, t, w):
            arr.flags.writeable = False
        return cls(users=u, items=i, ts=t, weights=w, n_users=nu, n_items=ni)

    def __len__(self) -> int:
        """Number of interaction rows."""
        return int(self.users.shape[0])

    def subset(self, rows: npt.NDArray[np.bool_] | IntArray) -> Interactions:
        """The interactions at ``rows`` (a boolean mask or row indices), same catalog sizes."""
        return Interactions.from_arrays(
            self.users[rows],
            self.items[rows],
            self.ts[rows],
            self.weights[rows],
            n_users=self.n_users,
            n_items=self.n_items,
        )

    def pair_keys(self) -> IntArray:
        """One int64 key per row, ``user * n_items + item``: equal keys mean the same pair."""
        return self.users * np.int64(self.n_items) + self.items

    def to_csr(self, binary: bool = True) -> sp.csr_matrix:
        """The users x items float32 CSR matrix with duplicate pairs collapsed to one entry.

        With ``binary`` every stored entry is 1.0; otherwise it is the sum of the pair's weights
        (a pair whose weights sum to 0 keeps an explicit 0 entry). Indices are sorted.
        """
        data = np.ones(len(self), dtype=np.float32) if binary else self.weights.astype(np.float32)
        m = sp.csr_matrix(
            (data, (self.users, self.items)),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )
        m.sum_duplicates()
        if binary:
            m.data[:] = 1.0
        return m

    def user_counts(self, distinct: bool = False) -> IntArray:
        """Per user (length ``n_users``): number of rows, or of distinct items if ``distinct``."""
        return self._counts(by_user=True, distinct=distinct)

    def item_counts(self, distinct: bool = False) -> IntArray:
        """Per item (length ``n_items``): number of rows, or of distinct users if ``distinct``."""
        return self._counts(by_user=False, distinct=distinct)

    def _counts(self, *, by_user: bool, distinct: bool) -> IntArray:
        size = self.n_users if by_user else self.n_items
        if not distinct:
            index = self.users if by_user else self.items
        elif self.n_items == 0:
            index = np.zeros(0, dtype=np.int64)
        else:
            keys = np.unique(self.pair_keys())
            index = keys // self.n_items if by_user else keys % self.n_items
        return np.bincount(index, minlength=size).astype(np.int64)


def _as_int64(name: str, values: npt.ArrayLike) -> IntArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise InvalidInputError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _INT64_MAX:
        raise InvalidInputError(f"{name} values do not fit in int64")
    return arr.astype(np.int64, copy=True)


def _as_count(name: str, value: int) -> int:
    try:
        count = operator.index(value)
    except TypeError:
        raise InvalidInputError(f"{name} must be an int, got {value!r}") from None
    if isinstance(value, bool) or count < 0:
        raise InvalidInputError(f"{name} must be a non-negative int, got {value!r}")
    return count


def _check_range(name: str, arr: IntArray, size: int) -> None:
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= size):
        raise InvalidInputError(
            f"{name} must lie in [0, {size}), got values in [{int(arr.min())}, {int(arr.max())}]"
        )
