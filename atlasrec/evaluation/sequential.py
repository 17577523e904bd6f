"""Anytime-valid comparisons of two arms, for decisions taken at every look.

The method is a confidence sequence (CS): an interval for the mean that holds at every
sample size at once with probability at least 1 - alpha, so a rollout may be checked after
every request and stopped whenever it says so. Each arm's mean gets the asymptotic CS of
Waudby-Smith, Arnold, Wu, Ramdas and Wang ("Time-uniform central limit theory and
asymptotic confidence sequences", 2021, Theorem 2.2), the two-sided normal-mixture boundary
of Robbins (1970) over the running sample variance:

    mean +- sqrt(2 (t var rho^2 + 1) / (t^2 rho^2) * log(sqrt(t var rho^2 + 1) / alpha))

with `rho` fixed in advance to be tightest near `t_opt` observations of a planning variance
`variance` (any fixed `rho` keeps the guarantee; a good one makes the sequence narrow where
decisions are expected: for per-user CTRs near 0.1, tuning for the variance of [0, 1] data
instead made the analysis need about ten times the users). The difference of two arms'
means gets the two arms' CSs at alpha / 2 each (a union bound): still anytime-valid at
alpha, with any allocation between the arms (a 5% canary included). No maintained Python
package provides it here: `confseq`, its authors' library, needs Boost and pybind11 2.6 and
does not build on this machine. `A/A` simulations in the tests measure the false-positive
rate over every look.

The sample ratio check is sequential too: the Dirichlet-multinomial mixture test of the
users per arm against the planned split (`split_mismatch`), at a strict level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

ALPHA = 0.05
SRM_ALPHA = 0.001
SRM_CONCENTRATION = 100.0
"""The Dirichlet prior's total weight in the sequential sample ratio test, spread as planned."""
T_OPT = 500
PLAN_VARIANCE = 0.005
"""The planning variance of a per-user value: a CTR near 0.1 over about 20 shown items."""


@dataclass(frozen=True)
class Interval:
    """A confidence interval (or one time of a confidence sequence)."""

    lower: float
    upper: float

    def excludes(self, value: float) -> bool:
        """Whether `value` lies outside the interval."""
        return value < self.lower or value > self.upper


def rho_squared(alpha: float, t_opt: int, variance: float = PLAN_VARIANCE) -> float:
    """The mixture's tuning: tightest near `t_opt` observations of variance `variance`.

    Waudby-Smith et al.'s choice for the intrinsic time `t_opt * variance` (eq. 15 is the
    unit-variance case).
    """
    log_term = -2 * math.log(alpha)
    return (log_term + math.log(log_term + 1)) / (t_opt * variance)


def radius(t: Any, variance: Any, alpha: float, t_opt: int) -> Any:
    """The boundary's half-width after `t` observations of sample variance `variance`.

    Scalars or numpy arrays alike (one formula for `mean_cs` and `running_mean_cs`).
    """
    rho2 = rho_squared(alpha, t_opt)
    grown = t * variance * rho2 + 1
    return np.sqrt(2 * grown / (t * t * rho2) * np.log(np.sqrt(grown) / alpha))


def mean_cs(x: np.ndarray, alpha: float = ALPHA, t_opt: int = T_OPT) -> Interval:
    """The asymptotic CS of the mean of `x` (in arrival order) at its last observation."""
    t = len(x)
    if t < 2:
        return Interval(-math.inf, math.inf)
    mean = float(np.mean(x))
    half = float(radius(t, float(np.var(x)), alpha, t_opt))
    return Interval(mean - half, mean + half)


def running_mean_cs(
    x: np.ndarray, alpha: float = ALPHA, t_opt: int = T_OPT
) -> tuple[np.ndarray, np.ndarray]:
    """`mean_cs` after each observation of `x` at once: (lower, upper) arrays."""
    t = np.arange(1, len(x) + 1, dtype=np.float64)
    mean = np.cumsum(x) / t
    variance = np.maximum(np.cumsum(np.square(x)) / t - mean**2, 0.0)
    half = radius(t, variance, alpha, t_opt)
    half[t < 2] = np.inf
    return mean - half, mean + half


def difference_cs(
    candidate: np.ndarray, live: np.ndarray, alpha: float = ALPHA, t_opt: int = T_OPT
) -> Interval:
    """A CS of mean(candidate) - mean(live): each arm's CS at alpha / 2."""
    c, b = mean_cs(candidate, alpha / 2, t_opt), mean_cs(live, alpha / 2, t_opt)
    return Interval(c.lower - b.upper, c.upper - b.lower)


@dataclass(frozen=True)
class Verdict:
    """A non-inferiority look: `worse`, `not_worse` or `continue`, and its numbers."""

    outcome: str
    difference: Interval
    margin: float
    candidate_mean: float
    live_mean: float


def non_inferiority(
    candidate: np.ndarray,
    live: np.ndarray,
    *,
    margin: float,
    min_n: int,
    alpha: float = ALPHA,
) -> Verdict:
    """Whether the candidate is worse than live by more than `margin` x live's mean.

    `worse`: the whole CS of the difference lies below `-margin * live mean` (roll back at
    once). `not_worse`: both arms have `min_n` observations and the CS lies above it.
    Otherwise `continue`.
    """
    c_mean = float(np.mean(candidate)) if len(candidate) else math.nan
    l_mean = float(np.mean(live)) if len(live) else math.nan
    diff = difference_cs(candidate, live, alpha)
    delta = margin * (l_mean if math.isfinite(l_mean) else 0.0)
    if diff.upper < -delta:
        outcome = "worse"
    elif min(len(candidate), len(live)) >= min_n and diff.lower > -delta:
        outcome = "not_worse"
    else:
        outcome = "continue"
    return Verdict(outcome, diff, delta, c_mean, l_mean)


def sample_ratio_mismatch(
    n_candidate: int, n_live: int, candidate_share: float, alpha: float = SRM_ALPHA
) -> tuple[bool, float]:
    """Whether the arms' sizes depart from the planned share (`split_mismatch`), and p."""
    if not 0 < candidate_share < 1:
        return False, 1.0
    return split_mismatch([n_candidate, n_live], [candidate_share, 1 - candidate_share], alpha)


def split_mismatch(
    counts: Sequence[int], shares: Sequence[float], alpha: float = SRM_ALPHA
) -> tuple[bool, float]:
    """Whether the users per arm depart from the planned split, and an anytime-valid p-value.

    The sequential multinomial test of Lindon and Malek ("Anytime-valid inference for
    multinomial count data", NeurIPS 2022): the Dirichlet-multinomial mixture's likelihood
    ratio against the planned split is a nonnegative martingale under it, so 1 / ratio is
    a p-value valid at every look (a chi-square test looked at repeatedly is not).
    """
    total = sum(counts)
    if total == 0 or len(counts) < 2:
        return False, 1.0
    planned = np.asarray(shares, dtype=np.float64) / float(sum(shares))
    prior = SRM_CONCENTRATION * planned
    n = np.asarray(counts, dtype=np.float64)
    log_ratio = (
        special.gammaln(prior.sum())
        - special.gammaln(prior.sum() + total)
        + float(np.sum(special.gammaln(prior + n) - special.gammaln(prior)))
        - float(np.sum(n * np.log(planned)))
    )
    p_value = float(min(1.0, math.exp(-log_ratio)))
    return p_value < alpha, p_value
