"""Retrains of stale and drifted models, budget permitting.

`retrain_stale` looks at every tenant of a region (`atlasrec.freshness`). A tenant whose
model is past its SLO, or whose last drift check of its live model found drift
(`atlasrec.drift`), is retrained (`submit`) when at least `RETRAIN_MIN_EPSILON` of its DP
budget is left, and not already scheduled within `RESCHEDULE_S`; each decision is a ledger
record: `monitor.retrain_scheduled`, or `monitor.retrain_refused` with the reason (the
budget, or the run refused by the ledger), recorded once per model version. The
serving processes export the refusals (`atlasrec_retrain_refused`), which alert
(AtlasRecRetrainRefused). Celery beat runs it per region; `atlasrec monitor retrain` by hand.

A retrain publishes a release candidate, and `roll_out` starts its rollout at once: the
offline and privacy gates, then the canary steps the automatic analysis advances, promotes
or rolls back (`atlasrec.releases`, `atlasrec.rollout_analysis`). A tenant with a release
in flight is not retrained until it is decided.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from atlasrec.dataplane.dp_runs import DpRunTable, budget_state
from atlasrec.drift import DriftReport, latest_drift
from atlasrec.errors import AtlasRecError, ConflictError, RefusedError
from atlasrec.freshness import TenantFreshness, region_freshness
from atlasrec.pipelines.train import TrainResult
from atlasrec.platform import Plane, Platform
from atlasrec.releases import in_flight, start
from atlasrec.tenancy import Region, Scope

DECISIONS = "monitor.retrain_"
SCHEDULED = f"{DECISIONS}scheduled"
REFUSED = f"{DECISIONS}refused"
RETRAIN_MIN_EPSILON = 1.0
"""A scheduled DP retrain needs at least this much budget left (less trains a poor model)."""
RESCHEDULE_S = 6 * 3600.0
"""A tenant scheduled less than this ago is not scheduled again (its run may be going on)."""


def retrain_stale(
    platform: Platform, region: Region, *, actor: str, submit: Callable[[str], Any]
) -> list[dict[str, Any]]:
    """Schedule a retrain of every stale model of `region` the budget allows; the decisions."""
    plane = platform.plane(region)
    now = time.time()
    scheduled, refused = _decisions(platform, region)
    recent = {t for t, at in scheduled.items() if at > now - RESCHEDULE_S}
    drift = latest_drift(platform, region)
    decisions = []
    for tenant in region_freshness(platform, region, now=now):
        trigger = _trigger(tenant, drift.get(tenant.tenant_id))
        if trigger is None or tenant.tenant_id in recent:
            continue
        if in_flight(plane, Scope(tenant.tenant_id, region), actor=actor) is not None:
            continue  # the last retrain's rollout is still being decided
        left = _budget_left(platform, Scope(tenant.tenant_id, region), actor=actor)
        decision: dict[str, Any] = {
            "tenant_id": tenant.tenant_id,
            "model_version": tenant.model_version,
            "trigger": trigger,
            "epsilon_left": left,
        }
        if left < RETRAIN_MIN_EPSILON:
            if refused.get(tenant.tenant_id, "") == tenant.model_version:
                continue  # refused already for this model: recorded, and still alerting
            reason = (
                f"DP budget: {left:.3f} left, a retrain needs {RETRAIN_MIN_EPSILON:g}; the "
                "officer may raise the cap"
            )
            decisions.append(_decide(plane, actor, decision | {"reason": reason}, REFUSED))
            continue
        _decide(plane, actor, decision, SCHEDULED)
        try:
            decision["job"] = submit(tenant.tenant_id)
        except AtlasRecError as exc:  # the run itself was refused (budget, data)
            decisions.append(_decide(plane, actor, decision | {"reason": str(exc)}, REFUSED))
            continue
        decisions.append({**decision, "scheduled": True})
    return decisions


def roll_out(platform: Platform, result: TrainResult, *, actor: str) -> dict[str, Any]:
    """Start the rollout of a retrain's candidate (gates first); what happened to it."""
    if result.release != "candidate":
        return {"started": False, "reason": f"the model went {result.release} at once"}
    try:
        started = start(platform, result.tenant_id, actor=actor, version=result.model_version)
    except (ConflictError, RefusedError) as exc:  # a failed gate, or a split in flight
        return {"started": False, "reason": str(exc)}
    return {"started": True, "state": started["state"], "plan": started["plan"]}


def _trigger(tenant: TenantFreshness, drift: DriftReport | None) -> str | None:
    """Why the tenant's model is a retrain candidate (`stale`, `drift: ...`), or None."""
    if tenant.signals["model"].breached:
        return "stale"
    if drift is not None and drift.model_version == tenant.model_version and drift.drifted:
        return f"drift: {', '.join(drift.drifted)}"
    return None


def _decide(plane: Plane, actor: str, decision: dict[str, Any], action: str) -> dict[str, Any]:
    """Record a decision in the region's ledger; the decision, with `scheduled`."""
    done = {**decision, "scheduled": action == SCHEDULED}
    plane.ledger.append(
        actor=actor,
        action=action,
        subject=f"tenant:{decision['tenant_id']}",
        tenant_id=decision["tenant_id"],
        details=done,
    )
    return done


def refused_retrains(platform: Platform, region: Region) -> dict[str, str | None]:
    """Tenants whose latest retrain decision was a refusal: the model version it was for.

    The refusal stands until a retrain is scheduled or the tenant's model changes (the
    caller compares the version with the live one).
    """
    return _decisions(platform, region)[1]


def _decisions(
    platform: Platform, region: Region
) -> tuple[dict[str, float], dict[str, str | None]]:
    """Each tenant's last scheduled retrain (epoch s), and the standing refusals; one read."""
    scheduled: dict[str, float] = {}
    latest: dict[str, tuple[str, str | None]] = {}
    for record in platform.plane(region).ledger.records(action=DECISIONS, limit=None):
        if not record.tenant_id:
            continue
        if record.action == SCHEDULED:
            scheduled[record.tenant_id] = datetime.fromisoformat(record.ts).timestamp()
        latest[record.tenant_id] = (record.action, json.loads(record.details).get("model_version"))
    refused = {t: version for t, (action, version) in latest.items() if action == REFUSED}
    return scheduled, refused


def _budget_left(platform: Platform, scope: Scope, *, actor: str) -> float:
    tenant = platform.control.get_tenant(scope.tenant_id)
    plane = platform.plane(scope.region)
    with plane.session(scope, actor=actor, action="monitor.retrain") as session:
        runs = DpRunTable(session, plane.ledger).runs()
    return budget_state(runs, cap=tenant.epsilon_cap, delta=tenant.delta).remaining
