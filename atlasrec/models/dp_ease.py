"""DP-EASE: EASE's closed form on a user-level DP release of the head's Gram matrix.

DP sufficient statistics (as DP-ALS, Chien et al. ICML 2021): the model is a function of two
Gaussian releases only, so it is as private as they are, whatever is computed from them.

1. **Counts** (`atlasrec.models.popularity.release_counts`): per-item user counts, released
   with their own Gaussian mechanism. The head is the `head` items with the highest released
   counts, so the choice of the head is private too; items outside it are ranked after the
   head by the same released counts.
2. **Gram matrix** of the head. Each user keeps their latest `cap` distinct head items S_u
   (n of them) and adds ``w_u x xᵀ``, ``x = 1[S_u]``. Only the upper triangle (diagonal
   included) is released, the lower one is its mirror, so the bound that matters is the L2
   norm of a user's upper triangle, ``w_u · √(n (n + 1) / 2)``: ``w_u = (n (n + 1) / 2)^-½``
   (about √2/n) makes it exactly 1, the sensitivity of the release to adding or removing one
   user. That is √2 more signal per user than ``w_u = 1/n`` (Frobenius norm of the full
   matrix ≤ 1), which counts each off-diagonal pair twice. It also weighs heavy users down,
   as a per-user normalisation does. The noise is N(0, std²), ``std = noise_multiplier``, on
   each upper-triangle entry, mirrored.
3. **Denoising** (`threshold` t > 0): the noisy Gram's eigenvalues at or below
   ``t · std · √H`` are set to 0 (the noise alone, a symmetric H x H matrix of N(0, std²)
   entries, has its eigenvalues within about ``±2 · std · √H``), which keeps the directions
   the users' signal stands out in and leaves a positive semi-definite matrix.
4. **EASE** (`atlasrec.evaluation.ease_weights_from_gram`) on it with the ridge
   ``λ = l2_scale · mean(diag G̃) + l2_noise · std · √H``. The first term is EASE's usual ridge
   in the Gram's own units (``w_u`` rescales G: EASE(cG, cλ) = EASE(G, λ)); the second damps
   the noise left in the kept directions. Without denoising (t = 0) the noisy Gram may be
   indefinite: λ is then doubled until ``G̃ + λI`` is positive definite (post-processing).
   Everything here is post-processing of public quantities (the releases, std, H).
5. **A content prior** (after DP-CMF, Curmei et al. RecSys 2023: the catalog's text is the
   tenant's, not its users'): the noise's part of the ridge, ``l2_noise · std · √H``, pulls
   ``B`` toward ``prior · S`` instead of 0, where S holds each head item's `prior_neighbours`
   nearest head items by the cosine of their content embeddings (a column sums to 1). The
   data's part still pulls toward 0, so the prior weighs most where the noise does (small
   tenants) and fades as the users' signal grows. Public data: no privacy cost.

Side measurements (scripts outside the benchmark): a tail-aware allocation (after Krichene
et al. 2023: item weights ``d_i = (c_i / max c)^-0.5`` inside the bound, unscaled after the
release) cost 10-15% of NDCG@10 on a 10K-user synthetic tenant and did not help on
ml-latest-small, so it was not kept; eigenvalue thresholding beat the plain ridge on
ml-latest-small's random split (0.29-0.30 against 0.26-0.28 at ε=8) and matched it on the
synthetic tenant.

The two releases are one Gaussian mechanism each (`Mechanism(z, 1.0, 1)`); `dp_ease_mechanisms`
calibrates both so that, composed (RDP), they spend exactly the run's epsilon.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from atlasrec.errors import AtlasRecError, InvalidInputError
from atlasrec.evaluation import Interactions, ease_weights_from_gram
from atlasrec.evaluation.baselines import _ScoringRecommender
from atlasrec.evaluation.data import FloatArray, IntArray
from atlasrec.models.ease_profile import ProfileWeights
from atlasrec.models.popularity import release_counts
from atlasrec.models.recommender import user_sequences
from privacy.accounting import Mechanism, calibrate_noise
from privacy.secure_mode import normal as secure_normal

_MAX_RIDGE_RETRIES = 8


@dataclass(frozen=True)
class DpEaseConfig:
    """DP-EASE settings; the defaults were chosen on a synthetic retail tenant (seed 1).

    That tenant is not one `benchmarks.models.dp_ease` measures (they use seed 0).
    """

    head: int = 1000
    """H: items (highest released counts) given EASE weights."""
    cap: int = 64
    """Distinct head items a user adds to the Gram matrix (their latest)."""
    count_share: float = 0.25
    """Epsilon of the count release alone, as a share of the run's."""
    l2_scale: float = 1.0
    """Ridge, as a multiple of the noisy Gram's mean diagonal."""
    l2_noise: float = 0.5
    """Ridge added per unit of the noise's scale std·√H."""
    threshold: float = 1.5
    """Eigenvalues of the noisy Gram at or below threshold·std·√H are dropped (0: none)."""
    prior: float = 1.0
    """Weight of the content prior S the noise's ridge pulls toward (0: none; see step 5)."""
    prior_neighbours: int = 20
    """Content neighbours per head item in S."""

    def __post_init__(self) -> None:
        if self.head < 1 or self.cap < 1:
            raise InvalidInputError(f"head and cap must be >= 1, got {self.head}, {self.cap}")
        if not 0 < self.count_share < 1:
            raise InvalidInputError(f"count_share must lie in (0, 1), got {self.count_share}")
        if min(self.l2_scale, self.l2_noise, self.threshold, self.prior) < 0:
            raise InvalidInputError("l2_scale, l2_noise, threshold and prior must be >= 0")
        if self.prior_neighbours < 1:
            raise InvalidInputError(f"prior_neighbours must be >= 1, got {self.prior_neighbours}")


@dataclass(frozen=True)
class HeadEase:
    """EASE over a catalog's head: head items, their weights, and the counts ordering all."""

    head: IntArray
    """The head's item indices, highest released count first."""
    weights: FloatArray
    """EASE weights over the head (H x H, zero diagonal)."""
    counts: FloatArray
    """Every item's count (released, for DP-EASE): the tail's order."""
    l2: float
    """The ridge λ the weights were computed with."""


def dp_ease_mechanisms(
    epsilon: float, delta: float, count_share: float = DpEaseConfig.count_share
) -> tuple[Mechanism, Mechanism]:
    """The count release and the Gram release that, composed, spend `epsilon` at `delta`.

    The count release spends `count_share` of it alone; the Gram release's noise multiplier
    is calibrated to what is left of the composition.
    """
    try:
        counts = Mechanism(calibrate_noise(count_share * epsilon, delta, 1.0, 1), 1.0, 1)
        gram = calibrate_noise(epsilon, delta, 1.0, 1, [counts])
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"epsilon {epsilon:g} at delta {delta:g} is too small for DP-EASE's two releases "
            f"({count_share:g} of it for the counts): {exc}"
        ) from None
    return counts, Mechanism(gram, 1.0, 1)


def head_items(counts: FloatArray, head: int) -> IntArray:
    """The `head` items with the highest counts, highest first (ties: lower index)."""
    top: IntArray = np.argsort(-counts, kind="stable")[:head].astype(np.int64)
    return top


def bounded_rows(
    sequences: Sequence[np.ndarray], n_items: int, head: IntArray, cap: int
) -> sp.csr_matrix:
    """Users x head rows R with ``RᵀR = Σ_u w_u x_u x_uᵀ`` (each user's term: unit norm).

    Row u holds ``√w_u`` on the user's latest `cap` distinct head items (`sequences` are in
    order of latest interaction), ``w_u = (n (n + 1) / 2)^-½`` for n such items: the upper
    triangle of ``w_u x_u x_uᵀ`` then has L2 norm exactly 1.
    """
    position = np.full(n_items, -1, dtype=np.int64)
    position[head] = np.arange(head.size)
    kept = [position[np.asarray(seq, dtype=np.int64)] for seq in sequences]
    kept = [k[k >= 0][-cap:] for k in kept]
    sizes = np.array([k.size for k in kept], dtype=np.int64)
    n = np.maximum(sizes, 1).astype(np.float64)
    rows = np.repeat(np.arange(len(kept)), sizes)
    cols = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    root_w = (n * (n + 1.0) / 2.0) ** -0.25
    return sp.csr_matrix((root_w[rows], (rows, cols)), shape=(len(kept), head.size))


def noisy_gram(rows: sp.csr_matrix, std: float, *, secure: bool = False) -> FloatArray:
    """``RᵀR`` (dense) plus symmetric Gaussian noise: N(0, std²) per upper entry, mirrored."""
    gram = np.asarray((rows.T @ rows).toarray(), dtype=np.float64)
    n = gram.shape[0]
    upper = np.triu_indices(n)
    if secure:
        noise = secure_normal(upper[0].size, std)
    else:
        noise = np.random.default_rng().normal(0.0, std, upper[0].size)  # OS entropy, no seed
    e = np.zeros((n, n))
    e[upper] = noise
    e += np.triu(e, 1).T
    result: FloatArray = gram + e
    return result


def ridge(gram: FloatArray, std: float, config: DpEaseConfig) -> tuple[float, float]:
    """λ for a noisy Gram, ``l2_scale · mean diag + l2_noise · std · √H``, and its noise part."""
    n = gram.shape[0]
    base = config.l2_scale * max(float(np.mean(np.diag(gram))), 0.0)
    noise = config.l2_noise * std * np.sqrt(n)
    lam = base + noise
    return (float(lam), float(noise)) if lam > 0 else (1e-6, 0.0)


def content_prior(content: FloatArray, head: IntArray, neighbours: int) -> FloatArray:
    """S: per head item (column), its `neighbours` nearest head items by content, summing to 1.

    Cosine similarities of the items' content embeddings, negatives and the diagonal at 0;
    an item whose content matches no other's has an all-zero column.
    """
    vectors = np.asarray(content[head], dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.where(norms > 0, norms, 1.0)
    s = np.maximum(vectors @ vectors.T, 0.0)
    np.fill_diagonal(s, 0.0)
    if neighbours < s.shape[0]:
        cut = -np.partition(-s, neighbours - 1, axis=0)[neighbours - 1]
        s[s < cut[None, :]] = 0.0  # ties at the cut may keep a few more
    total = s.sum(axis=0, keepdims=True)
    result: FloatArray = s / np.where(total > 0, total, 1.0)
    return result


def denoise(gram: FloatArray, floor: float) -> FloatArray:
    """``gram`` with its eigenvalues at or below `floor` set to 0 (symmetric input)."""
    values, vectors = sla.eigh(gram, overwrite_a=True, check_finite=False)
    kept = values > floor
    result: FloatArray = (vectors[:, kept] * values[kept]) @ vectors[:, kept].T
    return result


def fit_dp_ease(
    sequences: Sequence[np.ndarray],
    counts: FloatArray,
    config: DpEaseConfig,
    gram_release: Mechanism,
    *,
    content: FloatArray | None = None,
    secure: bool = False,
) -> HeadEase:
    """DP-EASE from users' sequences, released `counts` and the Gram release's mechanism.

    Only the Gram release reads `sequences` (under `gram_release`); `counts` must already be
    a DP release. `content` (items x dim, public): the content prior's embeddings (step 5).
    """
    if gram_release.sample_rate != 1.0 or gram_release.steps != 1:
        raise InvalidInputError("the Gram release is one Gaussian mechanism over all users")
    head = head_items(counts, min(config.head, counts.size))
    std = gram_release.noise_multiplier
    gram = noisy_gram(bounded_rows(sequences, counts.size, head, config.cap), std, secure=secure)
    if config.threshold > 0:
        gram = denoise(gram, config.threshold * std * np.sqrt(head.size))
    lam, noise = ridge(gram, std, config)
    prior = None
    if content is not None and config.prior > 0:
        prior = content_prior(content, head, config.prior_neighbours)
    for _ in range(_MAX_RIDGE_RETRIES):
        try:
            pulled = None if prior is None else (config.prior * noise / lam) * prior
            return HeadEase(head, ease_weights_from_gram(gram.copy(), lam, pulled), counts, lam)
        except AtlasRecError:  # indefinite: only without denoising
            lam *= 2.0
    raise AtlasRecError("the noisy Gram matrix stayed indefinite; raise l2_noise")


class HeadEaseScorer(_ScoringRecommender):
    """Ranks by a `HeadEase`: ``x_u B`` over the head, then the tail by count.

    History items outside the head are ignored; every head item ranks above every tail item.
    Subclasses set `model` in `_fit`.
    """

    model: HeadEase | None = None

    def _score(self, users: IntArray) -> FloatArray:
        assert self.model is not None and self._train is not None
        head, counts = self.model.head, self.model.counts
        rank = np.empty(counts.size)
        rank[head_items(counts, counts.size)] = np.arange(counts.size, dtype=np.float64)
        on_head = np.asarray(self._train[users][:, head].astype(np.float64) @ self.model.weights)
        floor = on_head.min(axis=1, keepdims=True) if head.size else np.zeros((users.size, 1))
        scores = floor - 1.0 - rank[None, :]  # the tail below the head, by count
        scores[:, head] = on_head
        return scores


class DpEaseRecommender(HeadEaseScorer):
    """DP-EASE as an evaluation `Recommender`: both releases and the fit happen on `fit`.

    `mechanisms` (count release, Gram release) are what a run charges: composed, exactly
    `epsilon` at `delta`. `content`: the items' embeddings for the content prior (none: no
    prior).
    """

    def __init__(
        self,
        epsilon: float,
        delta: float,
        config: DpEaseConfig | None = None,
        *,
        content: FloatArray | None = None,
        secure: bool = False,
    ) -> None:
        self.config = config or DpEaseConfig()
        self.content = content
        self.secure = secure
        self.mechanisms = dp_ease_mechanisms(epsilon, delta, self.config.count_share)

    def _fit(self, train: Interactions, x: sp.csr_matrix) -> None:
        sequences = user_sequences(train)
        count_release, gram_release = self.mechanisms
        counts = release_counts(sequences, train.n_items, count_release, secure=self.secure)
        self.model = fit_dp_ease(
            sequences, counts, self.config, gram_release, content=self.content, secure=self.secure
        )


GRAM_SHARE = 0.5
"""In a DP training run, the epsilon of the Gram release alone, as a share of the run's
(`atlasrec.models.dp_run`)."""


def as_profile(model: HeadEase) -> ProfileWeights:
    """The DP-EASE head as the `profile` order's weights (head rows sorted)."""
    order = np.argsort(model.head, kind="stable")
    weights = model.weights[np.ix_(order, order)].astype(np.float32)
    return ProfileWeights(model.head[order].astype(np.int64), weights, model.counts.size)
