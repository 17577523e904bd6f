"""Baseline recommenders: popularity, EASE and implicit-feedback ALS.

Each model takes a frozen config dataclass (``PopScorer(PopConfig())``). All share one ranking
path: scores are computed for a bounded batch of users at a time (about `SCORE_BUDGET` floats),
the user's training items are masked, and the top ``k`` are taken by descending score, ties
broken by ascending item index. A row is padded with ``-1`` only when the user has fewer than
``k`` items left to recommend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import scipy.linalg as sla  # type: ignore[import-untyped, unused-ignore]
import scipy.sparse as sp  # type: ignore[import-untyped, unused-ignore]
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped, unused-ignore]

from atlasrec.errors import AtlasRecError, InvalidInputError
from atlasrec.evaluation.data import FloatArray, IntArray, Interactions

SCORE_BUDGET = 1 << 22
"""Upper bound on the floats in one batch of scores (users x items), about 32 MiB."""


class NotFittedError(AtlasRecError):
    """`recommend` was called before `fit`."""


@runtime_checkable
class Recommender(Protocol):
    """A model that can be fitted on interactions and asked for top-k lists."""

    def fit(self, train: Interactions) -> None:
        """Learn from ``train`` (replacing anything learned before)."""
        ...

    def recommend(self, users: npt.NDArray[np.int64], k: int) -> IntArray:
        """Top-``k`` items per user, shape ``(len(users), k)``, never an item seen in train.

        ``-1`` pads a row only when fewer than ``k`` unseen items exist.
        """
        ...


class _ScoringRecommender:
    """Shared fit bookkeeping and batched, masked top-k ranking over dense scores."""

    _train: sp.csr_matrix | None = None

    def fit(self, train: Interactions) -> None:
        """Learn from ``train``."""
        self._train = None
        x = train.to_csr(binary=True)
        self._fit(train, x)
        self._train = x

    def recommend(self, users: npt.NDArray[np.int64], k: int) -> IntArray:
        """Top-``k`` unseen items per user, best first (see the module docstring)."""
        if self._train is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInputError(f"k must be an int >= 1, got {k!r}")
        k = int(k)
        x = self._train
        n_users, n_items = x.shape
        arr = np.asarray(users)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise InvalidInputError("users must be a 1-D array of user indices")
        arr = arr.astype(np.int64, copy=False)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= n_users):
            raise InvalidInputError(f"user indices must lie in [0, {n_users})")
        out = np.full((arr.size, k), -1, dtype=np.int64)
        batch = max(1, SCORE_BUDGET // max(n_items, 1))
        for start in range(0, arr.size, batch):
            chunk = arr[start : start + batch]
            scores = np.asarray(self._score(chunk), dtype=np.float64)
            if scores.shape != (chunk.size, n_items):
                raise AtlasRecError(
                    f"scores have shape {scores.shape}, not {(chunk.size, n_items)}"
                )
            seen = x[chunk]
            rows = np.repeat(np.arange(chunk.size), np.diff(seen.indptr))
            scores[rows, seen.indices] = -np.inf
            out[start : start + chunk.size] = top_k(scores, k)
        return out

    def _fit(self, train: Interactions, x: sp.csr_matrix) -> None:
        raise NotImplementedError

    def _score(self, users: IntArray) -> FloatArray:
        raise NotImplementedError


def top_k(scores: FloatArray, k: int) -> IntArray:
    """Per row, the indices of the ``k`` largest finite scores, best first.

    Ties are broken by ascending index; ``-inf`` (and NaN) entries are never returned, and the
    row is padded with ``-1`` where fewer than ``k`` remain. Runs in O(n) per row plus O(k log k).
    """
    scores = np.where(np.isnan(scores), -np.inf, scores)
    n_rows, n_cols = scores.shape
    out = np.full((n_rows, k), -1, dtype=np.int64)
    kk = min(k, n_cols)
    if n_rows == 0 or kk == 0:
        return out
    threshold = np.partition(scores, n_cols - kk, axis=1)[:, n_cols - kk, None]
    above = scores > threshold
    ties = scores == threshold
    need = kk - above.sum(axis=1, keepdims=True)
    chosen = above | (ties & (np.cumsum(ties, axis=1) <= need))
    cols = np.nonzero(chosen)[1].reshape(n_rows, kk)  # ascending index within each row
    vals = np.take_along_axis(scores, cols, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    out[:, :kk] = np.where(np.isneginf(vals), -1, cols)
    return out


@dataclass(frozen=True)
class PopConfig:
    """Popularity has no parameters: an item's score is its number of distinct train users."""


class PopScorer(_ScoringRecommender):
    """Most popular items by distinct users, the same list for everyone minus their own items."""

    def __init__(self, config: PopConfig | None = None) -> None:
        self.config = config or PopConfig()
        self._pop: FloatArray | None = None

    def _fit(self, train: Interactions, x: sp.csr_matrix) -> None:
        self._pop = np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64)

    def _score(self, users: IntArray) -> FloatArray:
        assert self._pop is not None
        return np.broadcast_to(self._pop, (users.size, self._pop.size)).copy()


@dataclass(frozen=True)
class EASEConfig:
    """EASE settings: ``l2`` is the ridge penalty λ; ``max_items`` caps the dense item model."""

    l2: float = 500.0
    max_items: int = 20_000


class EASE(_ScoringRecommender):
    """Embarrassingly Shallow Autoencoder (Steck, WWW 2019), closed form on binary data.

    ``P = (XᵀX + λI)⁻¹`` and ``B = I - P · diag(P)⁻¹`` (so ``B_ij = -P_ij / P_jj`` off the
    diagonal and ``B_jj = 0``); a user's scores are ``x_u B``. ``B`` is a dense float64 item x
    item matrix (8 · n_items² bytes). When there are fewer users than items, ``P`` is computed
    exactly via Woodbury, ``P = (I - Xᵀ(λI + XXᵀ)⁻¹X) / λ``, which costs O(n_users ·
    n_items²) instead of O(n_items³).
    """

    def __init__(self, config: EASEConfig | None = None) -> None:
        self.config = config or EASEConfig()
        if not self.config.l2 > 0:
            raise InvalidInputError(f"EASE l2 must be > 0, got {self.config.l2!r}")
        self._b: FloatArray | None = None

    def _fit(self, train: Interactions, x: sp.csr_matrix) -> None:
        n_items = x.shape[1]
        if n_items > self.config.max_items:
            raise InvalidInputError(
                f"EASE keeps a dense {n_items} x {n_items} item matrix; n_items={n_items} exceeds "
                f"max_items={self.config.max_items} (raise EASEConfig.max_items or filter items)"
            )
        self._b = ease_weights(x, float(self.config.l2))

    def _score(self, users: IntArray) -> FloatArray:
        assert self._b is not None and self._train is not None
        return np.asarray(self._train[users].astype(np.float64) @ self._b)


def ease_weights(x: sp.csr_matrix, l2: float) -> FloatArray:
    """EASE's dense item x item weights ``B`` (float64, zero diagonal) for binary users x items.

    ``B_ij = -P_ij / P_jj`` with ``P = (XᵀX + λI)⁻¹``, via Woodbury when there are fewer users
    than items (see `EASE`); a user's scores are ``x_u B``.
    """
    n_users, n_items = x.shape
    xd = x.astype(np.float64)
    if n_users >= n_items:
        return ease_weights_from_gram((xd.T @ xd).toarray(), l2)
    gram_users = (xd @ xd.T).toarray()
    gram_users[np.diag_indices(n_users)] += l2
    chol = sla.cholesky(gram_users, lower=True, check_finite=False)
    z = sla.solve_triangular(chol, xd.toarray(), lower=True, check_finite=False)
    p = z.T @ z
    p *= -1.0 / l2
    p[np.diag_indices(n_items)] += 1.0 / l2
    return _weights_from_inverse(p)


def ease_weights_from_gram(
    gram: FloatArray, l2: float, prior: FloatArray | None = None
) -> FloatArray:
    """EASE's weights ``B`` from a dense symmetric item x item Gram matrix (overwritten).

    ``P = (G + λI)⁻¹`` and ``B_ij = -P_ij / P_jj`` with a zero diagonal, as `ease_weights` with
    ``G = XᵀX``; ``G`` may be any symmetric matrix with ``G + λI`` positive definite (a DP
    release of ``XᵀX``, say), else `AtlasRecError`. With a `prior` A the ridge pulls ``B``
    toward A instead of 0 (``min ‖X - XB‖² + λ‖B - A‖²``, ``diag B = 0``):
    ``B_ij = -P_ij / P_jj + λ (M_ij - P_ij M_jj / P_jj)``, ``M = PA``.
    """
    gram[np.diag_indices(gram.shape[0])] += l2
    p = _spd_inverse(gram)
    if prior is None:
        return _weights_from_inverse(p)
    m = p @ prior
    ratio = np.diag(m) / np.diag(p)
    m -= p * ratio[None, :]
    weights = _weights_from_inverse(p)
    weights += l2 * m
    weights[np.diag_indices(weights.shape[0])] = 0.0
    return weights


def _weights_from_inverse(p: FloatArray) -> FloatArray:
    """``B = -P / diag(P)`` column-wise with a zero diagonal, in place."""
    diag = p.diagonal().copy()
    p /= -diag[None, :]
    p[np.diag_indices(p.shape[0])] = 0.0
    return np.asarray(p)


def _spd_inverse(a: FloatArray) -> FloatArray:
    """Inverse of a symmetric positive definite matrix via Cholesky, in place when possible."""
    n = a.shape[0]
    # a.T is the same symmetric matrix in Fortran order, so LAPACK can work on it without a copy.
    c, info = lapack.dpotrf(a.T, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise AtlasRecError(f"Cholesky factorisation failed (info={info})")
    inv, info = lapack.dpotri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise AtlasRecError(f"Cholesky inverse failed (info={info})")
    inv = np.asarray(inv)
    step = 1024
    for lo in range(0, n, step):  # mirror the upper triangle, one block of rows at a time
        hi = min(lo + step, n)
        inv[lo:hi, :lo] = inv[:lo, lo:hi].T
        block = inv[lo:hi, lo:hi]
        inv[lo:hi, lo:hi] = np.triu(block) + np.triu(block, 1).T
    return inv


@dataclass(frozen=True)
class ALSConfig:
    """Implicit-feedback ALS settings (``implicit.als.AlternatingLeastSquares``, CPU).

    ``alpha`` scales the binary confidences; ``seed`` fixes the factor initialisation and
    ``num_threads`` the solver's threads (each user/item row is solved independently, so the
    result does not depend on it).
    """

    factors: int = 64
    iterations: int = 15
    regularization: float = 0.05
    alpha: float = 1.0
    seed: int = 0
    num_threads: int = 1


class ALS(_ScoringRecommender):
    """Matrix factorisation by alternating least squares (Hu, Koren & Volinsky 2008).

    Fitted with the `implicit` package on the binary user x item matrix; scores are the dot
    products of user and item factors, ranked by the shared masked top-k path.
    """

    def __init__(self, config: ALSConfig | None = None) -> None:
        self.config = config or ALSConfig()
        self._user_factors: FloatArray | None = None
        self._item_factors: FloatArray | None = None

    def _fit(self, train: Interactions, x: sp.csr_matrix) -> None:
        from implicit.als import AlternatingLeastSquares

        cfg = self.config
        # implicit recommends a single-threaded BLAS around its own parallel solver.
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=cfg.alpha,
                iterations=cfg.iterations,
                random_state=cfg.seed,
                num_threads=cfg.num_threads,
                use_gpu=False,
            )
            model.fit(x.astype(np.float32), show_progress=False)
        self._user_factors = np.asarray(model.user_factors, dtype=np.float64)
        self._item_factors = np.asarray(model.item_factors, dtype=np.float64)

    def _score(self, users: IntArray) -> FloatArray:
        assert self._user_factors is not None and self._item_factors is not None
        return self._user_factors[users] @ self._item_factors.T
