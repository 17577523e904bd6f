"""A tenant's running experiment as serving splits traffic for it (`atlasrec.experiments`).

- **A/B**: a user's arm is the bucket of a keyed hash of its pseudonym (the experiment's
  salt, `serving.arms.bucket`) against the split's cumulative bounds: sticky, and independent
  of any earlier rollout's assignment. Anonymous sessions are not in the experiment.
- **Interleave**: both arms answer the request, and one list is drawn from the two by team
  draft (`atlasrec.evaluation.interleaving`); its record keeps each position's team. Both
  lists are policy filtered, so the mix is too.

An arm that fails never fails the request: the live model answers, marked degraded
(`candidate`), and the record, still on the arm, counts against it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from atlasrec.evaluation.interleaving import team_draft
from atlasrec.experiments import ARM_NAMES
from serving.arms import BUCKETS, bucket
from serving.online import OnlineFeatures
from serving.pipeline import Query, Served, recommend
from serving.state import ServingState

log = logging.getLogger(__name__)
_COIN = random.Random()
FAILED = "candidate"
"""The degraded stage of an arm's failure (as a failing canary's)."""


@dataclass(frozen=True, eq=False)
class Trial:
    """The running experiment's arms: their versions, loaded states and split."""

    id: str
    kind: str
    versions: tuple[str, ...]
    states: Mapping[str, ServingState]
    """Each arm version's snapshot, except the live one's (the tenant's current state)."""
    bounds: tuple[float, ...]
    """The split's cumulative bucket bounds, one per arm."""
    salt: bytes

    @classmethod
    def of(cls, row: Any, states: Mapping[str, ServingState]) -> Trial:
        """The trial of an `experiments` row, with its arms' loaded snapshots."""
        bounds = tuple(b * BUCKETS / 100 for b in accumulate(float(s) for s in row.split))
        return cls(row.id, row.kind, tuple(row.arms), states, bounds, str(row.salt).encode())

    def arm(self, user_key: str) -> int:
        """The A/B arm of a user (sticky per experiment)."""
        at = bucket(self.salt, user_key)
        return next((n for n, b in enumerate(self.bounds) if at < b), len(self.bounds) - 1)

    def state(self, n: int, live: ServingState) -> ServingState:
        """Arm `n`'s snapshot: live's when its version is live, else its own if it loaded."""
        version = self.versions[n]
        if version == live.model_version:
            return live
        if version not in self.states:
            raise LookupError(f"experiment {self.id}: arm {ARM_NAMES[n]} ({version}) not loaded")
        return self.states[version]


@dataclass(frozen=True)
class TrialAnswer:
    """What a request in the experiment was served, and by which arm."""

    served: Served
    arm: str
    teams: str | None = None


def serve_trial(
    trial: Trial,
    user_key: str,
    live: ServingState,
    online: OnlineFeatures,
    query: Query,
    budgets: Mapping[str, float],
) -> TrialAnswer:
    """Answer an identified user's request (`user_key`, its pseudonym) inside the experiment."""
    if trial.kind == "interleave":
        return _interleaved(trial, live, online, query, budgets)
    n = trial.arm(user_key)
    return TrialAnswer(_arm(trial, n, live, online, query, budgets), ARM_NAMES[n])


def _arm(
    trial: Trial,
    n: int,
    live: ServingState,
    online: OnlineFeatures,
    query: Query,
    budgets: Mapping[str, float],
) -> Served:
    try:
        return recommend(trial.state(n, live), online, query, budgets)
    except Exception:
        log.exception("experiment %s: arm %s failed", trial.id, ARM_NAMES[n])
        served = recommend(live, online, query, budgets)
        served.degraded.append(FAILED)
        return served


def _interleaved(
    trial: Trial,
    live: ServingState,
    online: OnlineFeatures,
    query: Query,
    budgets: Mapping[str, float],
) -> TrialAnswer:
    """Both arms' lists, team-drafted into one (fresh coin flips per request)."""
    a = _arm(trial, 0, live, online, query, budgets)
    b = _arm(trial, 1, live, online, query, budgets)
    scores = {**dict(b.items), **dict(a.items)}
    items, teams = team_draft([i for i, _ in a.items], [i for i, _ in b.items], query.k, _COIN)
    timings = {s: a.timings_ms.get(s, 0.0) + b.timings_ms.get(s, 0.0) for s in a.timings_ms}
    served = Served(
        items=[(i, scores[i]) for i in items],
        model_version=a.model_version,
        cold_start=a.cold_start and b.cold_start,
        degraded=sorted(set(a.degraded) | set(b.degraded)),
        timings_ms=timings,
        intent=a.intent,
    )
    return TrialAnswer(served, "AB", teams)
