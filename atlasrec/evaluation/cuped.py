"""CUPED: less variance from a covariate measured before the experiment (Deng et al. 2013).

Each user's metric `y` becomes `y - theta * (x - mean(x))`, `x` the same metric before the
experiment began and `theta = Cov(y, x) / Var(x)` pooled over all arms. `x` predates the
assignment, so no arm's expected mean moves, and the share of the variance `x` explains
(its squared correlation with `y`) is removed. Users with no value before take `mean(x)`:
they are not adjusted. `theta` is estimated from the data at each look, which keeps the
asymptotic confidence sequences valid (regression adjustment under continuous monitoring:
Lindon et al. 2022); the A/A simulation of `scripts/bench experiments` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_COVERED = 20
"""Users with a value before the experiment needed to adjust at all."""


@dataclass(frozen=True)
class Adjustment:
    """What CUPED did: the coefficient, the users it had a covariate for, the variance kept."""

    theta: float
    covered: int
    variance_ratio: float
    """Var(adjusted) / Var(unadjusted): 1 when nothing was adjusted."""


def cuped(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, Adjustment]:
    """`y` adjusted by the pre-experiment covariate `x` (aligned; NaN where a user has none)."""
    known = ~np.isnan(x)
    covered = int(known.sum())
    if covered < MIN_COVERED or len(y) < 2:
        return y, Adjustment(0.0, covered, 1.0)
    filled = np.where(known, x, x[known].mean())
    spread = float(np.var(filled))
    if spread == 0.0:
        return y, Adjustment(0.0, covered, 1.0)
    theta = float(np.cov(y, filled, bias=True)[0, 1] / spread)
    adjusted = y - theta * (filled - filled.mean())
    raw = float(np.var(y))
    return adjusted, Adjustment(theta, covered, float(np.var(adjusted)) / raw if raw else 1.0)
