"""The empirical privacy audit of a DP training configuration: one run with canary users.

A DP release's mechanism (noise multiplier, sample rate, steps, clipping norm, model
hyperparameters) is run again over the tenant's catalog content with synthetic users:
`canaries` canary users, each with its own random items and included with probability 1/2
(secret coin flips), and background users with random items that make up the release's
user count, so that the sample rate and steps are the release's own. No user of the tenant
is read: the audit spends no budget and changes no served model; the guarantee it tests is
the mechanism's, which holds for any data.

The attack (`canary_scores`): how well the trained model predicts each of a canary's items
from its others (leave-one-out cosine, averaged). A run that leaks scores the canaries it
trained on higher. `privacy.empirical.one_run_audit` turns the scores and coin flips into
an epsilon lower bound and the attack's AUC. The same run without DP is the control: it
shows the attack finds what an unprotected run memorises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from atlasrec.models.training import DpPlan, train
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig
from privacy.empirical import OneRunAudit, one_run_audit

CANARIES = 500
CANARY_ITEMS = 8
CONTROL_DELTA = 1e-5
"""The delta the control's (non-DP) bound is computed at."""


def audit_run(
    content: np.ndarray,
    config: TwoTowerConfig,
    plan: DpPlan | None,
    n_users: int,
    *,
    canaries: int = CANARIES,
    seed: int = 0,
) -> OneRunAudit:
    """Train once with canaries under `plan` (None: the non-DP control) and attack them."""
    rng = np.random.default_rng(seed)
    length = min(CANARY_ITEMS, len(content))
    m = max(2, min(canaries, n_users))
    histories = [rng.choice(len(content), size=length, replace=False) for _ in range(m)]
    included = rng.random(m) < 0.5
    included[:2] = (True, False)  # both kinds, whatever the coin flips
    planted = [h for h, keep in zip(histories, included, strict=True) if keep]
    background = [
        rng.choice(len(content), size=length, replace=False)
        for _ in range(max(n_users - len(planted), 0))
    ]
    users = [*planted, *background]
    order = rng.permutation(len(users))
    model, _ = train(content, [users[u] for u in order], replace(config, seed=seed), dp=plan)
    delta = plan.delta if plan is not None else CONTROL_DELTA
    return one_run_audit(canary_scores(model, histories), included, delta=delta)


def canary_scores(model: TwoTower, histories: Sequence[np.ndarray]) -> np.ndarray:
    """Each history's mean cosine between each item and the user vector of the others."""
    raw = model.raw_item_vectors()
    unit = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    left_out = [(h, j) for h in histories for j in range(len(h))]
    users = model.encode_vector_histories([raw[np.delete(h, j)] for h, j in left_out])
    targets = np.stack([unit[h[j]] for h, j in left_out])
    cosines = (users * targets).sum(axis=1)
    return np.asarray(cosines.reshape(len(histories), -1).mean(axis=1), dtype=np.float64)
