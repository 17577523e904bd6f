"""The accountant agrees with an independent one; calibration meets its target."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.errors import InvalidInputError
from privacy.accounting import Mechanism, calibrate_noise, epsilon, independent_epsilon

mechanisms = st.builds(
    Mechanism,
    st.floats(0.6, 20.0),
    st.floats(0.001, 1.0),
    st.integers(1, 3000),
)


@given(ms=st.lists(mechanisms, min_size=1, max_size=3), delta=st.sampled_from([1e-5, 1e-6]))
@settings(max_examples=40, deadline=None)
def test_opacus_and_google_accountants_agree(ms: list[Mechanism], delta: float) -> None:
    ours, theirs = epsilon(ms, delta), independent_epsilon(ms, delta)
    assert math.isclose(ours, theirs, rel_tol=0.01, abs_tol=1e-3), (ours, theirs)


def test_long_run_agrees() -> None:
    m = [Mechanism(1.1, 0.01, 10_000)]
    assert math.isclose(epsilon(m, 1e-5), independent_epsilon(m, 1e-5), rel_tol=0.005)


@given(m=mechanisms, extra=st.integers(1, 1000))
@settings(max_examples=30, deadline=None)
def test_more_steps_or_more_runs_never_cost_less(m: Mechanism, extra: int) -> None:
    longer = Mechanism(m.noise_multiplier, m.sample_rate, m.steps + extra)
    assert epsilon([longer], 1e-5) >= epsilon([m], 1e-5)
    assert epsilon([m, m], 1e-5) >= epsilon([m], 1e-5)


@pytest.mark.parametrize(
    ("target", "rate", "steps"), [(1.0, 0.01, 1000), (8.0, 0.2, 300), (4.0, 1.0, 30)]
)
def test_calibrated_noise_meets_the_target_tightly(target: float, rate: float, steps: int) -> None:
    sigma = calibrate_noise(target, 1e-5, rate, steps)
    assert epsilon([Mechanism(sigma, rate, steps)], 1e-5) <= target
    assert epsilon([Mechanism(sigma * 0.97, rate, steps)], 1e-5) > target * 0.99


def test_calibration_composes_with_prior_runs() -> None:
    prior = [Mechanism(4.0, 0.1, 500)]
    sigma = calibrate_noise(6.0, 1e-5, 0.1, 500, prior)
    assert epsilon([*prior, Mechanism(sigma, 0.1, 500)], 1e-5) <= 6.0
    with pytest.raises(InvalidInputError, match="no budget left"):
        calibrate_noise(epsilon(prior, 1e-5) * 0.5, 1e-5, 0.1, 500, prior)


@pytest.mark.parametrize(
    "args", [(0.0, 0.1, 1), (1.0, 0.0, 1), (1.0, 1.5, 1), (1.0, 0.1, 0), (math.nan, 0.1, 1)]
)
def test_invalid_mechanisms(args: tuple[float, float, int]) -> None:
    with pytest.raises(InvalidInputError):
        Mechanism(*args)
