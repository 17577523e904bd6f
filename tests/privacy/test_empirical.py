"""The one-run epsilon lower bound (Steinke, Nasr and Jagielski, 2023): valid for mechanisms
of known epsilon, tight where the attack is perfect, and zero where it guesses at random."""

from __future__ import annotations

import numpy as np
import pytest

from atlasrec.errors import InvalidInputError
from privacy.empirical import epsilon_lower_bound, one_run_audit, p_value


def randomized_response(eps: float, m: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Canary coin flips and scores that reveal each flip with probability e^eps/(1+e^eps):
    an eps-DP mechanism per canary, so a valid bound exceeds eps at most 5% of the time."""
    included = rng.random(m) < 0.5
    truthful = rng.random(m) < np.exp(eps) / (1 + np.exp(eps))
    scores = np.where(truthful, included, ~included) + rng.normal(0, 1e-3, m)
    return scores, included


@pytest.mark.parametrize("eps", [0.5, 2.0, 4.0])
def test_the_bound_holds_for_a_mechanism_of_known_epsilon(eps: float) -> None:
    rng = np.random.default_rng(0)
    bounds = [
        one_run_audit(*randomized_response(eps, 1_000, rng), delta=0).epsilon_lower_bound
        for _ in range(40)
    ]
    assert np.mean(np.array(bounds) > eps) <= 0.05  # 95% confidence
    assert np.median(bounds) > 0.6 * min(eps, 3.0)  # and it is not vacuous


def test_a_random_attack_bounds_nothing_and_a_perfect_one_a_lot() -> None:
    rng = np.random.default_rng(1)
    included = rng.random(1_000) < 0.5
    blind = one_run_audit(rng.random(1_000), included, delta=1e-5)
    assert blind.epsilon_lower_bound < 0.3 and abs(blind.auc - 0.5) < 0.06
    perfect = one_run_audit(included.astype(float), included, delta=1e-5)
    assert perfect.epsilon_lower_bound > 3.0 and perfect.auc == 1.0


def test_p_values_grow_with_epsilon_and_delta() -> None:
    low, high = p_value(1_000, 100, 80, 0.5, 0.0), p_value(1_000, 100, 80, 2.0, 0.0)
    assert low < high
    assert p_value(1_000, 100, 80, 1.0, 1e-3) > p_value(1_000, 100, 80, 1.0, 0.0)
    assert epsilon_lower_bound(1_000, 100, 50, 1e-5, 0.05) == 0.0  # half right: nothing


def test_an_audit_needs_canaries_of_both_kinds() -> None:
    with pytest.raises(InvalidInputError, match="both in and out"):
        one_run_audit([0.1, 0.2, 0.3], [True, True, True], delta=0)
