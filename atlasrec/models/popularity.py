"""Item popularity for the model's popularity prior: exact, or released with user-level DP.

The two-tower model scores `cosine / temperature + w * log(1 + count)`, with `w` learned. A
DP run may not feed exact counts into training (every user's loss would then depend on the
other users' data), so it first releases the counts with the Gaussian mechanism:

- each user contributes 1 to each of their latest `CONTRIBUTION_CAP` distinct items, so one
  user changes the count vector by at most sqrt(`CONTRIBUTION_CAP`) in L2 norm;
- Gaussian noise of standard deviation noise_multiplier * sqrt(`CONTRIBUTION_CAP`) is added
  to every item's count, drawn from the OS's entropy (never from a seed).

The release is one Gaussian mechanism (`privacy.accounting.Mechanism(z, 1.0, 1)`) composed
with the DP-SGD steps in the run's charge; `POPULARITY_SHARE` of the run's epsilon goes to it.
A model trained without counts has no prior (its weight is held at 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from atlasrec.errors import InvalidInputError
from atlasrec.evaluation import Interactions
from privacy.accounting import Mechanism, calibrate_noise
from privacy.secure_mode import normal as secure_normal

CONTRIBUTION_CAP = 32
"""Distinct items a user adds to the released counts (their latest ones)."""

POPULARITY_SHARE = 0.25
"""Epsilon of the release alone, as a share of the run's. Composed (RDP), it costs the DP-SGD
steps little: for ml-latest-small's schedule their noise multiplier grows 3-4% at run
epsilon 1-8 (0.6-1.3% at a share of 0.1, 7-11% at 0.4), for a release noise multiplier of
14.6 / 4.0 / 2.2 at run epsilon 1 / 4 / 8 (34 / 9.4 / 5.0 at a share of 0.1)."""

MAX_NOISE_MULTIPLIER = 20.0
"""A release noisier than this (count noise above 113 users) is not made."""


def weighted_counts(log: Interactions) -> np.ndarray:
    """Weighted interaction count per item (exact): the ranking feature `popularity`'s count."""
    counts: np.ndarray = np.bincount(log.items, weights=log.weights, minlength=log.n_items)
    return counts


def item_counts(
    sequences: Sequence[np.ndarray], n_items: int, cap: int | None = None
) -> np.ndarray:
    """Users per item (float64): each sequence's distinct items, only its last `cap` if given."""
    counts = np.zeros(n_items, dtype=np.float64)
    for seq in sequences:
        items = np.unique(np.asarray(seq if cap is None else seq[-cap:], dtype=np.int64))
        counts[items] += 1.0
    return counts


def release_mechanism(epsilon: float, delta: float) -> Mechanism | None:
    """The Gaussian release that spends `POPULARITY_SHARE * epsilon` on its own.

    None when that share buys no useful release (run epsilons below about 0.8 at
    delta 1e-5): the run then spends all of its epsilon on DP-SGD and has no popularity prior.
    """
    try:
        noise = calibrate_noise(POPULARITY_SHARE * epsilon, delta, 1.0, 1)
    except InvalidInputError:  # too small for the accountant's orders
        return None
    return Mechanism(noise, 1.0, 1) if noise <= MAX_NOISE_MULTIPLIER else None


def run_mechanisms(
    epsilon: float, delta: float, sample_rate: float, steps: int
) -> tuple[Mechanism | None, Mechanism]:
    """A DP run's two mechanisms: the count release (None: no prior) and the DP-SGD steps.

    Composed (RDP), they spend `epsilon`: the release its `POPULARITY_SHARE`, the DP-SGD
    noise multiplier calibrated to what is left of the composition.
    """
    release = release_mechanism(epsilon, delta)
    prior = [] if release is None else [release]
    sigma = calibrate_noise(epsilon, delta, sample_rate, steps, prior)
    return release, Mechanism(sigma, sample_rate, steps)


def release_counts(
    sequences: Sequence[np.ndarray], n_items: int, mechanism: Mechanism, *, secure: bool = False
) -> np.ndarray:
    """Per-item counts released with user-level DP under `mechanism` (clipped at 0).

    `secure` (DP secure mode) draws the noise from the OS's CSPRNG (`privacy.secure_mode`)
    instead of NumPy's generator seeded from OS entropy.
    """
    if mechanism.sample_rate != 1.0 or mechanism.steps != 1:
        raise ValueError("a count release is one Gaussian mechanism over all users")
    counts = item_counts(sequences, n_items, CONTRIBUTION_CAP)
    scale = mechanism.noise_multiplier * np.sqrt(CONTRIBUTION_CAP)
    if secure:
        noise = secure_normal(n_items, scale)
    else:
        noise = np.random.default_rng().normal(0.0, scale, n_items)  # OS entropy, no seed
    released: np.ndarray = np.maximum(counts + noise, 0.0)
    return released
