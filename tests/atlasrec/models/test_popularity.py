"""The popularity prior's counts: exact, and the user-level DP release."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.models.popularity import (
    CONTRIBUTION_CAP,
    POPULARITY_SHARE,
    item_counts,
    release_counts,
    release_mechanism,
)
from privacy.accounting import Mechanism, epsilon, independent_epsilon

N_ITEMS = 60
histories = st.lists(st.integers(0, N_ITEMS - 1), min_size=0, max_size=80)


def as_sequence(items: list[int]) -> np.ndarray:
    return np.asarray(items, dtype=np.int64)


@settings(max_examples=200, deadline=None)
@given(st.lists(histories, max_size=8), histories)
def test_one_user_moves_the_counts_by_at_most_the_sensitivity(
    others: list[list[int]], user: list[int]
) -> None:
    """The release's noise is scaled to this bound: adding or removing any one user."""
    without = item_counts([as_sequence(h) for h in others], N_ITEMS, CONTRIBUTION_CAP)
    with_user = item_counts([as_sequence(h) for h in [*others, user]], N_ITEMS, CONTRIBUTION_CAP)
    assert np.linalg.norm(with_user - without) <= math.sqrt(CONTRIBUTION_CAP) + 1e-9


def test_only_the_latest_distinct_items_count() -> None:
    seq = np.arange(40, dtype=np.int64)  # oldest first
    counts = item_counts([seq, np.array([5, 5, 5])], 40, CONTRIBUTION_CAP)
    assert counts[: 40 - CONTRIBUTION_CAP].tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    assert (counts[40 - CONTRIBUTION_CAP :] == 1).all()
    assert item_counts([seq], 40).sum() == 40  # without a cap: every distinct item


@pytest.mark.parametrize("run_epsilon", [1.0, 4.0, 8.0])
def test_the_release_spends_its_share_of_the_epsilon(run_epsilon: float) -> None:
    mechanism = release_mechanism(run_epsilon, 1e-5)
    alone = epsilon([mechanism], 1e-5)
    assert alone <= POPULARITY_SHARE * run_epsilon + 1e-9
    assert alone == pytest.approx(POPULARITY_SHARE * run_epsilon, rel=0.02)
    assert alone == pytest.approx(independent_epsilon([mechanism], 1e-5), rel=0.01)


@pytest.mark.parametrize("secure", [False, True])
def test_the_release_adds_noise_of_the_calibrated_scale(secure: bool) -> None:
    n_items, z = 4000, 2.0
    base = [np.arange(0, 16), np.arange(8, 40)]
    exact = item_counts(base, n_items, CONTRIBUTION_CAP)
    mechanism = Mechanism(z, 1.0, 1)
    first = release_counts(base, n_items, mechanism, secure=secure)
    second = release_counts(base, n_items, mechanism, secure=secure)
    assert (first >= 0).all() and not np.array_equal(first, second)  # fresh noise each time
    # items no one has: the released value is max(0, noise); its mean is scale / sqrt(2 pi)
    scale = z * math.sqrt(CONTRIBUTION_CAP)
    empty = exact == 0
    assert first[empty].mean() == pytest.approx(scale / math.sqrt(2 * math.pi), rel=0.1)
    assert (first[empty] == 0).mean() == pytest.approx(0.5, abs=0.05)


def test_a_release_is_one_gaussian_mechanism_over_all_users() -> None:
    with pytest.raises(ValueError, match="one Gaussian mechanism"):
        release_counts([np.arange(3)], 5, Mechanism(2.0, 0.5, 1))


def test_small_run_epsilons_make_no_release() -> None:
    assert release_mechanism(0.1, 1e-5) is None  # 0.025: below what the RDP orders reach
    assert release_mechanism(0.5, 1e-5) is None  # calibrable, but noisier than the maximum
    assert release_mechanism(1.0, 1e-5) is not None
