"""DP accounting math (pure functions): epsilon of composed DP-SGD runs, noise calibration.

The platform's accountant is Opacus' RDP accountant; `independent_epsilon` recomputes the
same quantity with Google's `dp_accounting` library (a separate implementation) so that tests
and reports can cross-check it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import dp_accounting
from dp_accounting import rdp
from opacus.accountants import RDPAccountant

from atlasrec.errors import InvalidInputError

# Integer orders, the same for both accountants: both compute them exactly (fractional orders
# rely on series that `dp_accounting` sometimes drops), so the cross-check compares like with
# like. Without fractional orders the bound is slightly looser for full-batch runs: safe.
ORDERS: tuple[float, ...] = tuple(float(a) for a in range(2, 256))
_MAX_SIGMA = 1e4


@dataclass(frozen=True)
class Mechanism:
    """`steps` Poisson-subsampled Gaussian steps (DP-SGD), or one Gaussian release (q=1)."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise InvalidInputError(f"noise multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise InvalidInputError(f"sample rate must be in (0, 1], got {self.sample_rate}")
        if self.steps < 1:
            raise InvalidInputError(f"steps must be >= 1, got {self.steps}")


def epsilon(mechanisms: Sequence[Mechanism], delta: float) -> float:
    """Epsilon at `delta` of all mechanisms composed (Opacus RDP accountant); 0 if none."""
    if not mechanisms:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(m.noise_multiplier, m.sample_rate, m.steps) for m in mechanisms]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the smallest alpha": still valid
        return float(accountant.get_epsilon(delta, alphas=list(ORDERS)))


def independent_epsilon(mechanisms: Sequence[Mechanism], delta: float) -> float:
    """The same epsilon from Google's `dp_accounting` RDP accountant (for cross-checks)."""
    if not mechanisms:
        return 0.0
    accountant = rdp.RdpAccountant(orders=list(ORDERS))
    logging.getLogger("absl").setLevel(logging.ERROR)
    for m in mechanisms:
        event = dp_accounting.PoissonSampledDpEvent(
            m.sample_rate, dp_accounting.GaussianDpEvent(m.noise_multiplier)
        )
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, m.steps))
    return float(accountant.get_epsilon(delta))


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    prior: Sequence[Mechanism] = (),
    *,
    tolerance: float = 0.005,
) -> float:
    """Smallest noise multiplier whose run, composed after `prior`, stays within `target_epsilon`.

    `target_epsilon` is the total budget for prior runs plus this one.
    """
    if epsilon(prior, delta) >= target_epsilon:
        raise InvalidInputError("no budget left for another run")

    def total(sigma: float) -> float:
        return epsilon([*prior, Mechanism(sigma, sample_rate, steps)], delta)

    low, high = 0.1, 1.0
    while total(high) > target_epsilon:
        low, high = high, high * 2
        if high > _MAX_SIGMA:
            raise InvalidInputError("the budget is too small for this many steps")
    while high - low > tolerance * high:
        mid = (low + high) / 2
        low, high = (mid, high) if total(mid) > target_epsilon else (low, mid)
    return high
