"""The canary audit run: under DP the attack learns little; without DP it finds the canaries."""

from __future__ import annotations

import numpy as np

from atlasrec.models.dp_audit import audit_run
from atlasrec.models.training import DpPlan, dp_schedule
from atlasrec.models.two_tower import TwoTowerConfig
from privacy.accounting import Mechanism, calibrate_noise, epsilon

CONFIG = TwoTowerConfig(dim=16, hidden=32, history=10, positives=4, negatives=16, epochs=15)


def test_dp_bounds_the_attack_and_the_control_shows_it_works() -> None:
    content = np.random.default_rng(0).normal(size=(300, 32)).astype(np.float32)
    users = 600
    rate, steps = dp_schedule(users, CONFIG)
    sigma = calibrate_noise(2.0, 1e-5, rate, steps)
    claimed = epsilon([Mechanism(sigma, rate, steps)], 1e-5)
    plan = DpPlan(sigma, rate, steps, CONFIG.max_grad_norm, 1e-5)
    private = audit_run(content, CONFIG, plan, users, canaries=400)
    control = audit_run(content, CONFIG, None, users, canaries=400)
    assert private.canaries == control.canaries == 400
    assert private.epsilon_lower_bound < claimed
    assert control.auc > private.auc + 0.1 and control.auc > 0.65
    assert control.epsilon_lower_bound > private.epsilon_lower_bound + 0.3
