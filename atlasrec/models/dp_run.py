"""A DP training run's mechanisms and what it fits with them.

The run composes (RDP) up to four mechanisms to its epsilon, each charged before it runs:

1. the count release (`popularity.POPULARITY_SHARE` alone; none below a run epsilon of
   about 0.8, and then none of the next two either);
2. the Gram release of DP-EASE (`dp_ease.GRAM_SHARE` alone; none where the DP-SGD steps
   would not fit in what it leaves);
3. the validation release that picks the default order, with the floor
   (`dp_validation.VALIDATION_SHARE` alone; only for tenants of `MIN_VALIDATION_USERS`);
4. the DP-SGD steps, calibrated to what is left.

`fit_dp_run` is what `atlasrec train` runs and `evaluate --epsilon` measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from atlasrec.errors import InvalidInputError
from atlasrec.evaluation import Interactions
from atlasrec.intents import DefaultOrder
from atlasrec.models.dp_ease import GRAM_SHARE, DpEaseConfig, as_profile, fit_dp_ease
from atlasrec.models.dp_validation import (
    release_choice,
    user_gains,
    validation_cut,
    validation_mechanism,
)
from atlasrec.models.ease_profile import ProfileWeights
from atlasrec.models.popularity import release_counts, release_mechanism
from atlasrec.models.ranking.default_order import MIN_VALIDATION_USERS
from atlasrec.models.recommender import user_sequences
from atlasrec.models.training import DpPlan, Progress, TrainReport, train
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig
from privacy.accounting import Mechanism, calibrate_noise

UNVALIDATED_REASON = (
    "DP run without a validation release: DP-EASE's profile order where there is a Gram "
    "release (measured above the DP two-tower model on both questions), else the next order"
)


class RunMechanisms(NamedTuple):
    """A DP run's mechanisms (None: not released)."""

    counts: Mechanism | None
    gram: Mechanism | None
    validation: Mechanism | None
    sgd: Mechanism


def run_mechanisms(
    epsilon: float, delta: float, sample_rate: float, steps: int, users: int
) -> RunMechanisms:
    """The mechanisms of a run of `epsilon` over `users` users (see the module docstring)."""
    counts = release_mechanism(epsilon, delta)
    validation = None
    if counts is not None and users >= MIN_VALIDATION_USERS:
        validation = validation_mechanism(epsilon, delta)
    prior = [m for m in (counts, validation) if m is not None]
    if counts is not None:
        try:
            gram = Mechanism(calibrate_noise(GRAM_SHARE * epsilon, delta, 1.0, 1), 1.0, 1)
            sgd = calibrate_noise(epsilon, delta, sample_rate, steps, [*prior, gram])
            return RunMechanisms(counts, gram, validation, Mechanism(sgd, sample_rate, steps))
        except InvalidInputError:  # too little left for the DP-SGD steps: no Gram release
            pass
    try:
        sgd = calibrate_noise(epsilon, delta, sample_rate, steps, prior)
    except InvalidInputError:
        if validation is None:
            raise
        validation = None  # it leaves too little for the steps: validate nothing
        prior = [] if counts is None else [counts]
        sgd = calibrate_noise(epsilon, delta, sample_rate, steps, prior)
    return RunMechanisms(counts, None, validation, Mechanism(sgd, sample_rate, steps))


@dataclass
class DpRunFit:
    """What a DP run fitted: the model, released counts, DP-EASE head and default order."""

    model: TwoTower
    report: TrainReport
    counts: np.ndarray
    profile: ProfileWeights | None
    order: DefaultOrder
    order_lineage: dict[str, Any] = field(default_factory=dict)


def fit_dp_run(
    content: np.ndarray,
    codes: np.ndarray,
    data: Interactions,
    config: TwoTowerConfig,
    mechanisms: RunMechanisms,
    plan: DpPlan,
    *,
    init_backbone: dict[str, torch.Tensor] | None = None,
    progress: Progress | None = None,
) -> DpRunFit:
    """Run the mechanisms on `data` in order; with a validation release, on its cut."""
    secure, validation = plan.secure_mode, mechanisms.validation
    cut = None if validation is None else validation_cut(data)
    sequences: Sequence[np.ndarray] = user_sequences(data if cut is None else cut.prefix)
    counts, released, profile = np.zeros(data.n_items), None, None
    if mechanisms.counts is not None:
        released = release_counts(sequences, data.n_items, mechanisms.counts, secure=secure)
        counts = released
        if mechanisms.gram is not None:
            head = fit_dp_ease(
                sequences,
                released,
                DpEaseConfig(),
                mechanisms.gram,
                content=content,
                secure=secure,
            )
            profile = as_profile(head)
    model, report = train(
        content,
        sequences,
        config,
        dp=plan,
        init_backbone=init_backbone,
        popularity=released,
        progress=progress,
    )
    if validation is None or cut is None:
        order = DefaultOrder("profile" if profile is not None else "next")
        entry = {"chosen": order.order, "weight": 1.0, "reason": UNVALIDATED_REASON}
        return DpRunFit(model, report, counts, profile, order, entry)
    gains = user_gains(model, profile, counts, cut, codes)
    order, entry = release_choice(gains, validation, secure=secure)
    return DpRunFit(model, report, counts, profile, order, entry)
