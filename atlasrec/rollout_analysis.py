"""The automatic analysis of a release in flight: advance, promote or roll back.

It reads what the current step served (`served_requests` since the step began, by arm) and
the outcomes that responded to it (the offline store's events with a `request_id`), then:

- **first**, whether a serving process could not load the candidate at all (its
  `release.unservable` record): that rolls back at once;
- **every step**, the candidate's guardrails: no policy violation (shadow), an error share
  of at most `MAX_ERROR_SHARE`, and a p99 serving time of at most `P99_BOUND_MS` and at most
  `P99_FACTOR` times live's or `P99_SLACK_MS` over it, whichever is more. A failed
  guardrail rolls back at once;
- **shadow**: with `min_requests` shadow answers and the guardrails held, it advances to the
  first canary step;
- **canary**: the sample ratio check of users per arm against the step's share (a mismatch
  rolls back), then the primary metric (`ctr`: per user, the share of shown items clicked;
  `conversion`: per user, the share of requests with a purchase) compared by the
  anytime-valid non-inferiority test of `atlasrec.evaluation.sequential` with a margin of
  `MARGIN` of live's mean: worse rolls back, not worse (with `min_requests` users per arm)
  advances, otherwise it waits. The last step (all traffic on the candidate) has no live arm
  to compare with: it promotes on the guardrails and `min_requests`.

Users are the unit (the assignment is by user), so each user's requests give one value.
Each decision is a ledger record with the numbers that decided it (`atlasrec.releases`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import numpy as np
from sqlmodel import col, select

from atlasrec.dataplane.tables import ServedRequest
from atlasrec.evaluation.sequential import non_inferiority, sample_ratio_mismatch
from atlasrec.outcomes import user_values
from atlasrec.platform import Plane, Platform
from atlasrec.releases import UNSERVABLE, advance, in_flight, rollback
from atlasrec.tenancy import Region, Scope

MAX_ERROR_SHARE = 0.01
P99_BOUND_MS = 180.0
P99_FACTOR = 1.5
P99_SLACK_MS = 25.0
"""A p99 above 1.5x live's fails only if it is also this much slower: at a few milliseconds a
ratio alone would refuse a richer model that is well inside the budget (a stopped
`scripts/bench rollout.loop` run rolled one back: "p99 13.1 ms above 12.8 ms")."""
MARGIN = 0.10
"""Non-inferiority margin, relative to live's mean: a canary gate guards against harm, it
is not a test of improvement (per-user CTR near 0.2 needs a few thousand users per arm to pass)."""
ACTOR = "rollout-analysis"
FAILED = frozenset({"error", "candidate"})
"""Degraded stages of a candidate's failure: a shadow scoring's, or a canary answered by live."""


@dataclass(frozen=True)
class Decision:
    """What one analysis of a tenant's release decided, and its numbers."""

    tenant_id: str
    version: str | None
    decision: str
    """`none` (nothing in flight), `wait`, `advance` or `rollback`."""
    reason: str
    numbers: dict[str, Any]


def analyse(platform: Platform, tenant_id: str, *, metric: str = "ctr") -> Decision:
    """Analyse the tenant's release in flight once and act on the result."""
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    release = in_flight(plane, scope, actor=ACTOR)
    if release is None:
        return Decision(tenant_id, None, "none", "no release in flight", {})
    plan = release.plan or {}
    since = datetime.fromisoformat(plan.get("step_at") or plan["started_at"])
    broken = _unservable(plane, tenant_id, release.version)
    if broken is not None:
        verdict, reason, numbers = "rollback", "serving cannot load the candidate", broken
    else:
        rows = _served_since(plane, scope, since)
        verdict, reason, numbers = _judge(plane, scope, release.state, plan, rows, metric)
    if verdict == "advance":
        advance(platform, tenant_id, reason=reason, actor=ACTOR, numbers=numbers)
    elif verdict == "rollback":
        rollback(platform, tenant_id, reason=reason, actor=ACTOR, numbers=numbers)
    return Decision(tenant_id, release.version, verdict, reason, numbers)


def analyse_region(platform: Platform, region: Region) -> list[Decision]:
    """`analyse` of every tenant of the region with a release in flight (beat's watch)."""
    return each_tenant(platform, region, analyse)


class _Analysed(Protocol):
    @property
    def decision(self) -> str:
        """`none` when there was nothing to analyse."""


A = TypeVar("A", bound=_Analysed)


def each_tenant(
    platform: Platform, region: Region, analyse_one: Callable[[Platform, str], A]
) -> list[A]:
    """`analyse_one` of every tenant of the region; the analyses that found something."""
    found = (analyse_one(platform, tenant.id) for tenant in platform.control.list_tenants(region))
    return [d for d in found if d.decision != "none"]


def _judge(
    plane: Plane,
    scope: Scope,
    phase: str,
    plan: dict[str, Any],
    rows: list[ServedRequest],
    metric: str,
) -> tuple[str, str, dict[str, Any]]:
    arm = "shadow" if phase == "shadow" else "canary"
    candidate = [r for r in rows if r.arm == arm]
    live = [r for r in rows if r.arm == "live"]
    numbers = _guardrail_numbers(candidate, live)
    failed = _guardrail_failure(numbers)
    if failed:
        return "rollback", failed, numbers
    need = int(plan.get("min_requests", 1))
    if phase == "shadow":
        if numbers["requests"] < need:
            return "wait", f"{numbers['requests']} of {need} shadow answers", numbers
        return "advance", "shadow guardrails held", numbers
    share = float(plan["canary_steps"][int(plan["step"])]) / 100
    if share >= 1.0:
        if numbers["requests"] < need:
            return "wait", f"{numbers['requests']} of {need} requests at 100%", numbers
        return "advance", "guardrails held with all traffic on the candidate", numbers
    return _canary(plane, scope, candidate, live, share, need, metric, numbers)


def _canary(
    plane: Plane,
    scope: Scope,
    candidate: list[ServedRequest],
    live: list[ServedRequest],
    share: float,
    need: int,
    metric: str,
    numbers: dict[str, Any],
) -> tuple[str, str, dict[str, Any]]:
    values = user_values(plane, scope, [*candidate, *live], metric, actor=ACTOR)
    c_users = {r.user_key for r in candidate if r.user_key is not None}
    l_users = {r.user_key for r in live if r.user_key is not None}
    mismatch, p_value = sample_ratio_mismatch(len(c_users), len(l_users), share)
    numbers.update(users_candidate=len(c_users), users_live=len(l_users), srm_p=p_value)
    if mismatch:
        return "rollback", f"sample ratio mismatch (p = {p_value:.2g})", numbers
    c = np.array([values[u] for u in sorted(c_users)], dtype=np.float64)
    b = np.array([values[u] for u in sorted(l_users)], dtype=np.float64)
    verdict = non_inferiority(c, b, margin=MARGIN, min_n=need)
    numbers.update(
        metric=metric,
        candidate_mean=verdict.candidate_mean,
        live_mean=verdict.live_mean,
        difference_lower=verdict.difference.lower,
        difference_upper=verdict.difference.upper,
        margin=verdict.margin,
    )
    if verdict.outcome == "worse":
        return "rollback", f"{metric} worse than live beyond the margin", numbers
    if verdict.outcome == "not_worse":
        return "advance", f"{metric} not worse than live (margin {MARGIN:g})", numbers
    return "wait", f"{metric}: not decided yet", numbers


def _unservable(plane: Plane, tenant_id: str, version: str) -> dict[str, Any] | None:
    """A serving process's record that it could not load `version`, if any."""
    for record in plane.ledger.records(tenant_id=tenant_id, action=UNSERVABLE, limit=None):
        details: dict[str, Any] = json.loads(record.details)
        if details.get("version") == version:
            return details
    return None


def _served_since(plane: Plane, scope: Scope, since: datetime) -> list[ServedRequest]:
    query = select(ServedRequest).where(
        col(ServedRequest.tenant_id) == scope.tenant_id, col(ServedRequest.served_at) >= since
    )
    with plane.session(scope, actor=ACTOR, action="release.analyse") as session:
        return list(session.execute(query).scalars().all())


def _guardrail_numbers(candidate: list[ServedRequest], live: list[ServedRequest]) -> dict[str, Any]:
    def p99(rows: list[ServedRequest]) -> float | None:
        ok = [r.timings_ms.get("total", 0.0) for r in rows if not FAILED & set(r.degraded)]
        return float(np.percentile(ok, 99)) if ok else None

    errors = sum(bool(FAILED & set(r.degraded)) for r in candidate)
    return {
        "requests": len(candidate),
        "live_requests": len(live),
        "errors": errors,
        "error_share": errors / len(candidate) if candidate else 0.0,
        "policy_violations": sum(r.policy_violations for r in candidate),
        "p99_ms": p99(candidate),
        "live_p99_ms": p99(live),
    }


def _guardrail_failure(n: dict[str, Any]) -> str | None:
    """Why a guardrail failed, or None."""
    if n["policy_violations"] > 0:
        return f"{n['policy_violations']} policy violations"
    if n["requests"] >= 20 and n["error_share"] > MAX_ERROR_SHARE:
        return f"error share {n['error_share']:.1%} above {MAX_ERROR_SHARE:.0%}"
    p99, live = n["p99_ms"], n["live_p99_ms"]
    if p99 is not None and n["requests"] >= 20:
        bound = P99_BOUND_MS
        if live is not None:
            bound = min(P99_BOUND_MS, max(P99_FACTOR * live, live + P99_SLACK_MS))
        if p99 > bound:
            return f"p99 {p99:.1f} ms above {bound:.1f} ms"
    return None
