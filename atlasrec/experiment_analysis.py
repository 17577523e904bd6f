"""The analysis of a tenant's running experiment: decide it once the evidence allows.

It reads the requests the experiment served (`served_requests` with its id) and the
outcomes that responded to them (`atlasrec.outcomes.responses`), and may look after every
request: both tests stay valid under continuous monitoring.

- **A/B**: first the sample ratio check (the sequential multinomial test of the users per
  arm against the split, `atlasrec.evaluation.sequential.split_mismatch`, at p < 0.001; a
  mismatch means the assignment is broken, and the experiment ends as `invalid`). Then,
  per user, the primary metric (`atlasrec.outcomes.user_values`), adjusted by CUPED for
  the same metric over the `PRE_PERIOD` before the experiment (`atlasrec.evaluation.cuped`),
  and each arm against the control `A` by the anytime-valid confidence sequence of the
  difference of means (`atlasrec.evaluation.sequential`: asymptotic confidence sequences,
  Waudby-Smith et al. 2021), at alpha / (arms - 1) each (Bonferroni over the comparisons).
  An arm is `better` or `worse` once the sequence excludes 0 with at least `MIN_USERS`
  users in both arms; the experiment is decided when every comparison is.
- **Interleave**: each request's vote (`atlasrec.evaluation.interleaving.credit`) and the
  sequential sign test by a beta mixture (exact, Ville's inequality). Decided when the
  evidence reaches 1 / alpha; the winner is the team with more wins. Its numbers also say
  at which request, in serving order, the evidence first crossed (`first_decided_at`): the
  test may stop at any request, so that is when a look after every request would have.

A decision ends the experiment (`atlasrec.experiments.decide`, a ledger record with the
numbers); until then the latest numbers are kept on it for `experiments status`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlmodel import col, select

from atlasrec.dataplane.tables import Experiment, ServedRequest
from atlasrec.evaluation.cuped import Adjustment, cuped
from atlasrec.evaluation.interleaving import credit, first_decision, sign_test
from atlasrec.evaluation.sequential import ALPHA, difference_cs, split_mismatch
from atlasrec.experiments import ARM_NAMES, decide, note_result, running
from atlasrec.outcomes import per_user, responses
from atlasrec.platform import Plane, Platform
from atlasrec.rollout_analysis import each_tenant
from atlasrec.tenancy import Region, Scope

ACTOR = "experiment-analysis"
MIN_USERS = 50
"""Users per arm before an A/B comparison may decide (the sequence is asymptotic)."""
PRE_PERIOD = timedelta(days=14)
"""How far back before an experiment its users' metric is read as CUPED's covariate."""


@dataclass(frozen=True)
class Decision:
    """One analysis of a tenant's experiment."""

    tenant_id: str
    experiment_id: str | None
    decision: str
    """`none` (nothing running), `wait`, `decided` or `invalid`."""
    reason: str
    numbers: dict[str, Any]


def analyse(platform: Platform, tenant_id: str) -> Decision:
    """Analyse the tenant's running experiment once; end it when decided."""
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    experiment = running(plane, scope, actor=ACTOR)
    if experiment is None:
        return Decision(tenant_id, None, "none", "no experiment running", {})
    rows = _served(plane, scope, experiment)
    judge = _ab if experiment.kind == "ab" else _interleave
    verdict, reason, numbers = judge(plane, scope, experiment, rows)
    if verdict == "wait":
        note_result(platform, tenant_id, experiment.id, numbers, actor=ACTOR)
    else:
        valid = verdict == "decided"
        decide(
            platform,
            tenant_id,
            experiment.id,
            reason=reason,
            result=numbers,
            actor=ACTOR,
            valid=valid,
        )
    return Decision(tenant_id, experiment.id, verdict, reason, numbers)


def analyse_region(platform: Platform, region: Region) -> list[Decision]:
    """`analyse` of every tenant of the region with a running experiment (beat's watch)."""
    return each_tenant(platform, region, analyse)


def _served(plane: Plane, scope: Scope, experiment: Experiment) -> list[ServedRequest]:
    query = (
        select(ServedRequest)
        .where(
            col(ServedRequest.tenant_id) == scope.tenant_id,
            col(ServedRequest.served_at) >= experiment.created_at,
            col(ServedRequest.experiment_id) == experiment.id,
        )
        .order_by(col(ServedRequest.served_at))
    )
    with plane.session(scope, actor=ACTOR, action="experiment.analyse") as session:
        return list(session.execute(query).scalars().all())


def _ab(
    plane: Plane, scope: Scope, experiment: Experiment, rows: list[ServedRequest]
) -> tuple[str, str, dict[str, Any]]:
    names = ARM_NAMES[: len(experiment.arms)]
    users: dict[str, set[str]] = {n: set() for n in names}
    requests: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.arm in users and r.user_key is not None:
            users[r.arm].add(r.user_key)
            requests[r.arm] += 1
    mismatch, p_value = split_mismatch([len(users[n]) for n in names], experiment.split)
    raw, x, adjustment = _values(
        plane, scope, experiment, rows, {n: sorted(users[n]) for n in names}
    )
    numbers: dict[str, Any] = {
        "requests": len(rows),
        "srm_p": p_value,
        "cuped": asdict(adjustment),
        "arms": {
            n: {
                "version": v,
                "users": len(users[n]),
                "requests": requests[n],
                "mean": float(raw[n].mean()) if len(x[n]) else None,
                "adjusted_mean": float(x[n].mean()) if len(x[n]) else None,
            }
            for n, v in zip(names, experiment.arms, strict=True)
        },
    }
    if mismatch:
        return "invalid", f"sample ratio mismatch (p = {p_value:.2g})", numbers
    alpha = ALPHA / (len(names) - 1)
    comparisons = {n: _compare(x[n], x["A"], alpha) for n in names[1:]}
    numbers.update(alpha_per_comparison=alpha, comparisons=comparisons)
    if any(c["outcome"] == "undecided" for c in comparisons.values()):
        return "wait", f"{experiment.metric}: not decided yet", numbers
    better = [n for n in names[1:] if comparisons[n]["outcome"] == "better"]
    best = max(better, key=lambda n: float(x[n].mean())) if better else "A"
    numbers["winner"] = best
    version = numbers["arms"][best]["version"]
    return "decided", f"{experiment.metric}: arm {best} ({version}) wins", numbers


def _values(
    plane: Plane,
    scope: Scope,
    experiment: Experiment,
    rows: list[ServedRequest],
    users: dict[str, list[str]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Adjustment]:
    """Each arm's per-user values, and those CUPED-adjusted by the metric before it began."""
    earlier = _before(plane, scope, experiment)
    found = responses(plane, scope, [*earlier, *rows], actor=ACTOR)  # one read of outcomes
    values = per_user(rows, found, experiment.metric)
    before = per_user(earlier, found, experiment.metric)
    order = [u for n in users for u in users[n]]
    y = np.array([values[u] for u in order], dtype=np.float64)
    prior = np.array([before.get(u, np.nan) for u in order], dtype=np.float64)
    adjusted, adjustment = cuped(y, prior)
    ends = np.cumsum([len(users[n]) for n in users])[:-1]

    def by_arm(v: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(users, np.split(v, ends), strict=True))

    return by_arm(y), by_arm(adjusted), adjustment


def _before(plane: Plane, scope: Scope, experiment: Experiment) -> list[ServedRequest]:
    """The tenant's requests served in the `PRE_PERIOD` before the experiment began."""
    began = experiment.created_at
    query = select(ServedRequest).where(
        col(ServedRequest.tenant_id) == scope.tenant_id,
        col(ServedRequest.served_at) >= began - PRE_PERIOD,
        col(ServedRequest.served_at) < began,
        col(ServedRequest.user_key).is_not(None),
    )
    with plane.session(scope, actor=ACTOR, action="experiment.analyse") as session:
        return list(session.execute(query).scalars().all())


def _compare(arm: np.ndarray, control: np.ndarray, alpha: float) -> dict[str, Any]:
    """One arm against the control: the difference's confidence sequence and its outcome."""
    diff = difference_cs(arm, control, alpha)
    outcome = "undecided"
    if min(len(arm), len(control)) >= MIN_USERS:
        outcome = "better" if diff.lower > 0 else "worse" if diff.upper < 0 else "undecided"
    return {"difference_lower": diff.lower, "difference_upper": diff.upper, "outcome": outcome}


def _interleave(
    plane: Plane, scope: Scope, experiment: Experiment, rows: list[ServedRequest]
) -> tuple[str, str, dict[str, Any]]:
    interleaved = [r for r in rows if r.teams]
    clicked = responses(plane, scope, interleaved, actor=ACTOR).clicked
    votes = [credit(r.teams or "", clicked.get(r.request_id, set())) for r in interleaved]
    test = sign_test(sum(v < 0 for v in votes), sum(v > 0 for v in votes))
    first = first_decision(votes)
    numbers: dict[str, Any] = {
        "requests": len(interleaved),
        "first_decided_at": first and first[0],
        "wins": {"A": test.wins_a, "B": test.wins_b},
        "ties": len(votes) - test.wins_a - test.wins_b,
        "log_evidence": test.log_evidence,
        "threshold": float(np.log(1 / test.alpha)),
        "fixed_p_value": test.fixed_p_value,
        "arms": dict(zip(ARM_NAMES, experiment.arms, strict=False)),
    }
    if test.winner is None:
        return "wait", "interleaving: not decided yet", numbers
    numbers["winner"] = test.winner
    version = experiment.arms[ARM_NAMES.index(test.winner)]
    return "decided", f"interleaving: arm {test.winner} ({version}) preferred", numbers
