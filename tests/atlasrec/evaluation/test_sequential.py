"""Anytime-valid arm comparisons: A/A false positives over every look, power, SRM."""

from __future__ import annotations

import numpy as np
import pytest

from atlasrec.evaluation.sequential import (
    ALPHA,
    difference_cs,
    mean_cs,
    non_inferiority,
    running_mean_cs,
    sample_ratio_mismatch,
    split_mismatch,
)


def user_ctrs(rng: np.random.Generator, n: int, ctr: float) -> np.ndarray:
    """Per-user click-through rates: 1 to 5 requests of 10 impressions each."""
    requests = rng.integers(1, 6, n)
    return rng.binomial(requests * 10, ctr) / (requests * 10)


def ever_excludes_zero(candidate: np.ndarray, live: np.ndarray, looks: np.ndarray) -> bool:
    """Whether the difference CS excluded 0 at any look (users so far in each arm)."""
    c_low, c_up = running_mean_cs(candidate, ALPHA / 2)
    l_low, l_up = running_mean_cs(live, ALPHA / 2)
    for n_c, n_l in looks:
        if n_c >= 2 and n_l >= 2:
            lower, upper = c_low[n_c - 1] - l_up[n_l - 1], c_up[n_c - 1] - l_low[n_l - 1]
            if lower > 0 or upper < 0:
                return True
    return False


@pytest.mark.parametrize("share", [0.05, 0.5])
def test_aa_false_positives_over_every_look_stay_below_alpha(share: float) -> None:
    """200 A/A experiments of 4,000 users, each looked at after every 10 users."""
    rng = np.random.default_rng(7)
    false_positives = 0
    for _ in range(200):
        arms = rng.random(4_000) < share
        ctrs = user_ctrs(rng, 4_000, 0.08)
        candidate, live = ctrs[arms], ctrs[~arms]
        seen = np.arange(10, 4_001, 10)
        looks = np.stack([np.cumsum(arms)[seen - 1], np.cumsum(~arms)[seen - 1]], axis=1)
        false_positives += ever_excludes_zero(candidate, live, looks)
    assert false_positives / 200 <= ALPHA


def test_the_running_cs_is_the_cs_at_each_time() -> None:
    x = np.random.default_rng(1).random(50)
    lower, upper = running_mean_cs(x)
    for t in (2, 10, 50):
        cs = mean_cs(x[:t])
        assert (cs.lower, cs.upper) == pytest.approx((lower[t - 1], upper[t - 1]))


def test_a_much_worse_candidate_is_found_worse_and_an_equal_one_not_worse() -> None:
    rng = np.random.default_rng(3)
    live = user_ctrs(rng, 3_000, 0.10)
    worse = non_inferiority(user_ctrs(rng, 1_000, 0.05), live, margin=0.1, min_n=200)
    assert worse.outcome == "worse" and worse.difference.upper < -worse.margin
    equal = non_inferiority(user_ctrs(rng, 3_000, 0.10), live, margin=0.2, min_n=200)
    assert equal.outcome == "not_worse"
    early = non_inferiority(user_ctrs(rng, 50, 0.10), live, margin=0.2, min_n=200)
    assert early.outcome == "continue"  # too few users to promote on
    assert difference_cs(np.array([0.1]), live).lower == -np.inf


def test_a_sample_ratio_mismatch_is_caught_and_a_fair_split_is_not() -> None:
    assert sample_ratio_mismatch(50, 950, 0.05) == (False, pytest.approx(1.0))
    mismatch, p_value = sample_ratio_mismatch(120, 880, 0.05)
    assert mismatch and p_value < 1e-6
    assert not sample_ratio_mismatch(0, 0, 0.05)[0]


def test_the_sample_ratio_check_rarely_alarms_on_a_fair_split_looked_at_after_every_user() -> None:
    """300 fair 3-arm assignments of 2,000 users; the check after every one of them.

    A chi-square test at p < 0.001 looked at this often alarms far more than 0.1% of the
    time; the sequential test's guarantee holds over all looks (at most 0.1%: expect none).
    """
    rng = np.random.default_rng(3)
    alarms = 0
    for _ in range(300):
        arms = rng.choice(3, size=2_000, p=[0.5, 0.25, 0.25])
        counts = np.stack([np.cumsum(arms == a) for a in range(3)], axis=1)
        alarms += any(split_mismatch(list(c), [50, 25, 25])[0] for c in counts[9::10])
    assert alarms <= 1
    skewed = rng.choice(2, size=2_000, p=[0.56, 0.44])
    assert split_mismatch([int((skewed == 0).sum()), int((skewed == 1).sum())], [50, 50])[0]
