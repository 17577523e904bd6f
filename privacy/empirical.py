"""Empirical privacy: a lower bound on epsilon from one training run with canaries.

Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run" (NeurIPS 2023):
`m` canaries are each included in the training data with probability 1/2, independently.
After training, an attacker scores every canary, guesses "in" for the top scores and
"out" for the bottom ones (abstaining on the rest), and counts its correct guesses. If the
training is (epsilon, delta)-DP, `r` guesses are correct at least `v` times with
probability at most

    beta + alpha * delta * 2m,   q = e^eps / (1 + e^eps),
    beta = P[Binomial(r, q) >= v],
    alpha = max over i in 1..v of (P[Binomial(r, q) >= v - i] - beta) / i

(their Theorem 3.1 with delta, Proposition 5.2). The lower bound is the largest epsilon
that this rejects at the significance level; several guess counts are tried, each at the
significance divided by their number (Bonferroni), so the bound holds at the stated
confidence whichever count is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import binom
from sklearn.metrics import roc_auc_score

from atlasrec.errors import InvalidInputError

SIGNIFICANCE = 0.05
"""The bound holds with 95% confidence."""
GUESS_SHARES = (0.05, 0.1, 0.2, 0.4, 1.0)
"""Shares of the canaries guessed (half "in" from the top, half "out" from the bottom)."""
EPSILON_CEILING = 100.0


@dataclass(frozen=True)
class OneRunAudit:
    """The attack's result: the epsilon lower bound, its guesses, and the attack's AUC."""

    canaries: int
    guesses: int
    correct: int
    epsilon_lower_bound: float
    auc: float
    significance: float


def p_value(m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """Probability that an (epsilon, delta)-DP run lets `guesses` be right `correct` times."""
    q = float(expit(epsilon))
    beta = float(binom.sf(correct - 1, guesses, q))
    if delta == 0 or correct == 0:
        return min(beta, 1.0)
    below = np.arange(1, correct + 1)
    alpha = float(np.max((binom.sf(correct - below - 1, guesses, q) - beta) / below))
    return min(beta + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(
    m: int, guesses: int, correct: int, delta: float, significance: float
) -> float:
    """The largest epsilon whose (epsilon, delta) claim the guesses reject; 0 if none."""
    if guesses == 0 or p_value(m, guesses, correct, 0.0, delta) > significance:
        return 0.0
    if p_value(m, guesses, correct, EPSILON_CEILING, delta) <= significance:
        return EPSILON_CEILING
    rejects = lambda eps: significance - p_value(m, guesses, correct, eps, delta)  # noqa: E731
    return float(brentq(rejects, 0.0, EPSILON_CEILING, xtol=1e-6))


def one_run_audit(
    scores: npt.ArrayLike,
    included: npt.ArrayLike,
    *,
    delta: float,
    significance: float = SIGNIFICANCE,
) -> OneRunAudit:
    """Audit from canary scores (higher: more likely trained on) and the true coin flips."""
    s, truth = np.asarray(scores, dtype=np.float64), np.asarray(included, dtype=bool)
    m = len(s)
    if m < 2 or len(truth) != m or truth.all() or not truth.any():
        raise InvalidInputError(f"an audit needs canaries both in and out of training, got {m}")
    order = np.argsort(-s, kind="stable")
    per_count = significance / len(GUESS_SHARES)
    best = (0.0, 0, 0)
    for share in GUESS_SHARES:
        half = max(1, math.floor(m * share / 2))
        top, bottom = order[:half], order[m - half :]
        correct = int(truth[top].sum() + (~truth[bottom]).sum())
        bound = epsilon_lower_bound(m, 2 * half, correct, delta, per_count)
        if bound >= best[0]:
            best = (bound, 2 * half, correct)
    auc = float(roc_auc_score(truth, s))
    return OneRunAudit(m, best[1], best[2], best[0], auc, significance)
