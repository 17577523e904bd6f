"""DP-EASE: the user-level bound, the epsilon split, the noise, and the ranking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.errors import InvalidInputError
from atlasrec.evaluation import EASE, EASEConfig, Interactions, ease_weights, ease_weights_from_gram
from atlasrec.models.dp_ease import (
    DpEaseConfig,
    DpEaseRecommender,
    HeadEase,
    as_profile,
    bounded_rows,
    content_prior,
    denoise,
    dp_ease_mechanisms,
    fit_dp_ease,
    head_items,
    noisy_gram,
)
from atlasrec.models.popularity import item_counts
from privacy.accounting import Mechanism, epsilon, independent_epsilon

N_ITEMS = 30
histories = st.lists(st.integers(0, N_ITEMS - 1), max_size=60, unique=True)
TINY = Mechanism(1e-9, 1.0, 1)


def upper(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices(matrix.shape[0])]


def gram(sequences: list[np.ndarray], head: np.ndarray, cap: int) -> np.ndarray:
    rows = bounded_rows(sequences, N_ITEMS, head, cap)
    return np.asarray((rows.T @ rows).toarray())


@settings(max_examples=150, deadline=None)
@given(
    st.lists(histories, max_size=6),
    histories,
    st.integers(1, N_ITEMS),
    st.integers(1, 40),
    st.lists(st.floats(0.0, 500.0), min_size=N_ITEMS, max_size=N_ITEMS),
)
def test_one_user_moves_the_released_triangle_by_at_most_1(
    others: list[list[int]],
    user: list[int],
    n_head: int,
    cap: int,
    counts: list[float],
) -> None:
    """The Gram release's noise is scaled to this bound: adding or removing any one user."""
    head = head_items(np.asarray(counts), n_head)
    seqs = [np.asarray(h, dtype=np.int64) for h in others]
    without = gram(seqs, head, cap)
    with_user = gram([*seqs, np.asarray(user, dtype=np.int64)], head, cap)
    assert np.linalg.norm(upper(with_user - without)) <= 1.0 + 1e-9
    row = bounded_rows([np.asarray(user, dtype=np.int64)], N_ITEMS, head, cap)
    assert row.nnz <= cap


def test_a_user_adds_only_their_latest_cap_head_items() -> None:
    head = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    seq = np.array([0, 9, 1, 2, 8, 3], dtype=np.int64)  # oldest first; 8, 9 outside the head
    row = bounded_rows([seq], N_ITEMS, head, 3).toarray()[0]
    assert np.flatnonzero(row).tolist() == [1, 2, 3]
    assert np.linalg.norm(upper(np.outer(row, row))) == pytest.approx(1.0)  # exactly 1


@pytest.mark.parametrize("run_epsilon", [1.0, 4.0, 8.0])
def test_the_two_releases_compose_to_the_run_epsilon(run_epsilon: float) -> None:
    counts, grams = dp_ease_mechanisms(run_epsilon, 1e-5, 0.25)
    total = epsilon([counts, grams], 1e-5)
    assert total <= run_epsilon + 1e-9
    assert total == pytest.approx(run_epsilon, rel=0.01)
    assert epsilon([counts], 1e-5) == pytest.approx(0.25 * run_epsilon, rel=0.02)
    # Google's dp_accounting, a separate implementation, agrees
    assert independent_epsilon([counts, grams], 1e-5) == pytest.approx(total, rel=0.01)


def test_the_recommender_charges_its_two_releases() -> None:
    rec = DpEaseRecommender(4.0, 1e-5, DpEaseConfig(count_share=0.4))
    counts, grams = rec.mechanisms
    assert epsilon([counts, grams], 1e-5) == pytest.approx(4.0, rel=0.01)
    assert epsilon([counts], 1e-5) == pytest.approx(1.6, rel=0.02)


def test_an_epsilon_too_small_is_refused_clearly() -> None:
    with pytest.raises(InvalidInputError, match="too small for DP-EASE"):
        DpEaseRecommender(0.02, 1e-5)
    with pytest.raises(InvalidInputError, match="count_share"):
        DpEaseConfig(count_share=1.0)


@pytest.mark.parametrize("secure", [False, True])
def test_the_gram_noise_is_symmetric_with_the_calibrated_scale(secure: bool) -> None:
    rows = bounded_rows([np.arange(5)], N_ITEMS, np.arange(N_ITEMS), 8)
    noise = noisy_gram(rows, 0.0, secure=secure)  # exact
    first = noisy_gram(rows, 3.0, secure=secure) - noise
    second = noisy_gram(rows, 3.0, secure=secure) - noise
    assert np.array_equal(first, first.T) and not np.array_equal(first, second)
    assert upper(first).std() == pytest.approx(3.0, rel=0.1)  # 465 draws


def test_denoising_drops_the_small_eigenvalues() -> None:
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(20, 20)))[0]
    values = np.linspace(-5.0, 10.0, 20)
    out = denoise((basis * values) @ basis.T, 2.0)
    assert np.allclose(np.linalg.eigvalsh(out), np.sort(np.where(values > 2.0, values, 0.0)))


def regular_log(n_users: int = 40, per_user: int = 4, n_items: int = 12) -> Interactions:
    """Every user has exactly `per_user` distinct items (so every user gets the same w_u)."""
    rng = np.random.default_rng(7)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    users = np.repeat(np.arange(n_users), per_user)
    return Interactions.from_arrays(users, items, np.arange(users.size), n_items=n_items)


@pytest.mark.parametrize("threshold", [0.0, 1.5])
def test_without_noise_it_is_ease_on_the_head(threshold: float) -> None:
    log = regular_log()
    x = log.to_csr()
    seqs = [x[u].indices.astype(np.int64) for u in range(log.n_users)]
    counts = item_counts(seqs, log.n_items)
    config = DpEaseConfig(head=log.n_items, threshold=threshold)
    model = fit_dp_ease(seqs, counts, config, TINY)
    w = 1.0 / np.sqrt(4 * 5 / 2)  # every user: 4 head items
    exact = ease_weights(x[:, model.head].tocsr(), model.l2 / w)  # rows and columns: the head
    assert np.allclose(model.weights, exact, atol=1e-6)


def test_with_negligible_noise_it_ranks_as_ease() -> None:
    log = regular_log()
    rec = DpEaseRecommender(8.0, 1e-5, DpEaseConfig(head=log.n_items))
    rec.mechanisms = (TINY, TINY)
    rec.fit(log)
    assert rec.model is not None
    users = np.arange(log.n_users)
    ease = EASE(EASEConfig(l2=rec.model.l2 * np.sqrt(4 * 5 / 2)))
    ease.fit(log)
    assert np.array_equal(rec.recommend(users, 5), ease.recommend(users, 5))


def test_unseen_head_items_come_first_then_the_tail_by_released_count() -> None:
    log = regular_log(n_users=30, per_user=3, n_items=20)
    rec = DpEaseRecommender(8.0, 1e-5, DpEaseConfig(head=6))
    rec.fit(log)
    assert rec.model is not None
    users = np.arange(log.n_users)
    ranked = rec.recommend(users, 18)
    assert ranked.shape == (30, 18)
    x = log.to_csr()
    head = set(rec.model.head.tolist())
    tail_order = [i for i in np.argsort(-rec.model.counts, kind="stable") if i not in head]
    for u, row in zip(users.tolist(), ranked, strict=True):
        seen = set(x[u].indices.tolist())
        assert not seen & set(row.tolist()) and len(set(row.tolist()) - {-1}) == 17
        n_head = len(head - seen)
        assert set(row[:n_head].tolist()) == head - seen
        assert row[n_head:].tolist() == [i for i in tail_order if i not in seen] + [-1]


def test_the_head_as_profile_weights_keeps_each_pair_of_items() -> None:
    head = np.array([5, 2, 9])  # highest released count first
    weights = np.arange(9, dtype=np.float64).reshape(3, 3)
    profile = as_profile(HeadEase(head, weights, np.zeros(12), 1.0))
    assert profile.head.tolist() == [2, 5, 9] and profile.size == 12
    # item 5 -> item 9 was weights[0, 2]; now rows/columns 1 and 2
    assert profile.weights[1, 2] == weights[0, 2] and profile.weights[0, 1] == weights[1, 0]


def test_the_content_prior_keeps_each_items_nearest_neighbours_summing_to_1() -> None:
    rng = np.random.default_rng(3)
    content = rng.normal(size=(12, 5))
    head = np.array([7, 1, 4, 9, 0, 11])
    s = content_prior(content, head, 2)
    v = content[head] / np.linalg.norm(content[head], axis=1, keepdims=True)
    cosine = v @ v.T
    for j in range(head.size):
        kept = np.flatnonzero(s[:, j])
        others = np.delete(np.arange(head.size), j)
        positive = others[cosine[others, j] > 0]
        nearest = positive[np.argsort(-cosine[positive, j])][:2]
        assert set(kept) == set(nearest.tolist())
        if kept.size:
            assert np.isclose(s[:, j].sum(), 1.0)
            assert np.allclose(s[kept, j], cosine[kept, j] / cosine[kept, j].sum())


def test_the_ridge_pulls_the_weights_toward_the_prior() -> None:
    rng = np.random.default_rng(4)
    x = (rng.random((40, 6)) < 0.4).astype(np.float64)
    prior = rng.random((6, 6))
    lam = 3.0
    weights = ease_weights_from_gram(x.T @ x, lam, prior.copy())
    for j in range(6):  # each column: argmin ‖x_j - X b‖² + λ‖b - a_j‖² with b_j = 0
        others = np.delete(np.arange(6), j)
        a = x[:, others]
        b = np.linalg.solve(a.T @ a + lam * np.eye(5), a.T @ x[:, j] + lam * prior[others, j])
        assert np.allclose(weights[others, j], b) and weights[j, j] == 0.0
    assert np.allclose(
        ease_weights_from_gram(np.zeros((6, 6)), lam, prior.copy()), prior - np.diag(np.diag(prior))
    )


def test_under_heavy_noise_the_prior_ranks_a_content_twin_first() -> None:
    n_items = 40
    content = np.eye(n_items)
    content[31] = content[30]  # items 30 and 31 read alike
    log = regular_log(n_users=200, per_user=4, n_items=n_items)
    x = log.to_csr()
    users = np.array([u for u in range(log.n_users) if x[u, 30] and not x[u, 31]])
    found = {}
    for prior in (0.0, 3.0):
        rec = DpEaseRecommender(0.2, 1e-5, DpEaseConfig(head=n_items, prior=prior), content=content)
        rec.fit(log)
        found[prior] = np.mean(rec.recommend(users, 1)[:, 0] == 31)
    assert users.size >= 10 and found[3.0] >= 0.9 > found[0.0]
