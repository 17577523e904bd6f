"""The release registry: each model version's state in its tenant's lifecycle.

    candidate -> shadow -> canary -> live -> retired
    (candidate, shadow, canary or live) -> rolled_back

`train` publishes a candidate; the tenant's first model, or `train --promote`, goes live at
once. The live version is the one the model store's LATEST names, which is what serving
loads and swaps to atomically; the registry (`model_releases`, in the tenant's region
database) and LATEST change in one step: LATEST moves inside the registry's transaction and
is put back if the transaction fails. Only one version is live; the one it replaces is
retired, and a rollback of the live version brings the newest retired one back. Every
decision (published, promoted, rolled back) is a ledger record with its reason and the
numbers that decided it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from itertools import pairwise
from typing import Any

from sqlmodel import col, select

from atlasrec.artifacts import Artifact
from atlasrec.clock import utcnow
from atlasrec.dataplane.session import TenantSession
from atlasrec.dataplane.tables import Experiment, ModelRelease
from atlasrec.errors import ConflictError, InvalidInputError, RefusedError
from atlasrec.models.bundle import KIND
from atlasrec.platform import Plane, Platform
from atlasrec.release_gates import offline_gate, privacy_gate
from atlasrec.tenancy import Scope

PUBLISHED = "release.published"
STARTED = "release.started"
UNSERVABLE = "release.unservable"
"""Serving could not load a release's candidate (the analysis rolls it back)."""
ADVANCED = "release.advanced"
PROMOTED = "release.promoted"
ROLLED_BACK = "release.rolled_back"
BACKFILLED = "live before the release registry"
MAX_REASON = 500
DEFAULT_STEPS = (5, 25, 50, 100)
DEFAULT_MIN_REQUESTS = 200
"""Requests each arm serves at a step before the analysis may decide on it."""
MAX_STEPS = 10


class State(StrEnum):
    """A model version's place in its tenant's release lifecycle."""

    CANDIDATE = "candidate"
    SHADOW = "shadow"
    CANARY = "canary"
    LIVE = "live"
    RETIRED = "retired"
    ROLLED_BACK = "rolled_back"


IN_FLIGHT = (State.SHADOW, State.CANARY)
NEXT: dict[State, frozenset[State]] = {
    State.CANDIDATE: frozenset({State.SHADOW, State.CANARY, State.LIVE, State.ROLLED_BACK}),
    State.SHADOW: frozenset({State.CANARY, State.LIVE, State.ROLLED_BACK}),
    State.CANARY: frozenset({State.LIVE, State.ROLLED_BACK}),
    State.LIVE: frozenset({State.RETIRED, State.ROLLED_BACK}),
    State.RETIRED: frozenset({State.LIVE}),
    State.ROLLED_BACK: frozenset(),
}
"""The transitions the lifecycle allows (a retired version returns only by a rollback)."""


def register(plane: Plane, scope: Scope, version: str, *, live: bool, actor: str) -> State:
    """Enter a newly published version: live when asked or the tenant's first, else a candidate."""
    with _changing(plane, scope, actor=actor, action="release.publish") as session:
        rows = _rows(session, plane, scope, actor=actor)
        current = _live(rows)
        state = State.LIVE if live or current is None else State.CANDIDATE
        row = ModelRelease(tenant_id=scope.tenant_id, version=version, state=State.CANDIDATE)
        session.add(row)
        reason = (
            "train --promote" if live else "the tenant's first model" if current is None else None
        )
        if state is State.LIVE:
            _switch(session, plane, scope, row, current, State.RETIRED, reason, actor=actor)
        _record(
            plane,
            session,
            scope,
            PUBLISHED,
            actor=actor,
            version=version,
            state=state.value,
            previous_live=current and current.version,
            reason=reason,
        )
    return state


def start(
    platform: Platform,
    tenant_id: str,
    *,
    actor: str,
    version: str | None = None,
    shadow_percent: float = 0.0,
    canary_steps: Sequence[int] = DEFAULT_STEPS,
    min_requests: int = DEFAULT_MIN_REQUESTS,
) -> dict[str, Any]:
    """Start a candidate's rollout: shadow first (when `shadow_percent` > 0), then canary steps.

    The offline and privacy gates (`atlasrec.release_gates`) run first; a candidate that
    fails one is rolled back at once (a ledger record with the gate's numbers) and refused.
    """
    plan = _plan(tenant_id, shadow_percent, canary_steps, min_requests)
    scope, plane = _open(platform, tenant_id)
    target, live = _candidate_and_live(plane, scope, version, actor=actor)
    gates = [
        offline_gate(target, live),
        privacy_gate(platform, scope, target, actor=actor),
    ]
    numbers = {g.name: {"passed": g.passed, "reason": g.reason, **g.numbers} for g in gates}
    failed = next((g for g in gates if not g.passed), None)
    if failed is not None:
        _reject(
            plane,
            scope,
            target.version,
            f"{failed.name} gate: {failed.reason}",
            numbers,
            actor=actor,
        )
        raise RefusedError(
            f"tenant {tenant_id!r}: candidate {target.version!r} failed the {failed.name} "
            f"gate ({failed.reason}); it is rolled back"
        )
    with _changing(plane, scope, actor=actor, action="release.start") as session:
        rows = _rows(session, plane, scope, actor=actor)
        _refuse_overlap(tenant_id, rows)  # again: another start may have won meanwhile
        _refuse_experiment(session, tenant_id)
        row = _find(rows, tenant_id, target.version)
        to = State.SHADOW if plan["shadow_percent"] > 0 else State.CANARY
        _check(tenant_id, row, State(row.state), to)
        plan["step"] = -1 if to is State.SHADOW else 0
        plan["step_at"] = utcnow().isoformat()
        _set(row, to, "rollout started")
        row.plan = plan
        _record(
            plane,
            session,
            scope,
            STARTED,
            actor=actor,
            version=row.version,
            plan=plan,
            numbers=numbers,
        )
    return {
        "tenant": tenant_id,
        "version": row.version,
        "state": to.value,
        "plan": plan,
        "gates": numbers,
    }


def _candidate_and_live(
    plane: Plane, scope: Scope, version: str | None, *, actor: str
) -> tuple[Artifact, Artifact | None]:
    """The candidate to roll out (`version`, or the newest) and the live model's artifacts."""
    with plane.session(scope, actor=actor, action="release.read") as session:
        rows = _rows(session, plane, scope, actor=actor)
    _refuse_overlap(scope.tenant_id, rows)
    row = _find(rows, scope.tenant_id, version) if version else _pending(rows)
    if row is None:
        raise InvalidInputError(f"tenant {scope.tenant_id!r} has no candidate to roll out")
    _check(scope.tenant_id, row, State(row.state), State.CANARY)
    current = _live(rows)
    artifacts = plane.artifacts
    live = None if current is None else artifacts.get(scope, KIND, current.version, actor=actor)
    return artifacts.get(scope, KIND, row.version, actor=actor), live


def _refuse_overlap(tenant_id: str, rows: list[ModelRelease]) -> None:
    flying = [r for r in rows if r.state in IN_FLIGHT]
    if flying:
        raise ConflictError(
            f"tenant {tenant_id!r}: the rollout of {flying[-1].version!r} is in flight "
            "(rollouts may not overlap on one tenant's traffic): promote or roll it back first"
        )


def _refuse_experiment(session: TenantSession, tenant_id: str) -> None:
    query = select(Experiment).where(
        col(Experiment.tenant_id) == tenant_id, col(Experiment.state) == "running"
    )
    running = session.execute(query).scalars().first()
    if running is not None:
        raise ConflictError(
            f"tenant {tenant_id!r}: experiment {running.id!r} is running (a rollout may not "
            "overlap it on the tenant's traffic): stop it first"
        )


def _reject(
    plane: Plane, scope: Scope, version: str, reason: str, numbers: dict[str, Any], *, actor: str
) -> None:
    """Roll a candidate back before any user saw it (a failed gate), with its numbers."""
    with _changing(plane, scope, actor=actor, action="release.reject") as session:
        row = _find(_rows(session, plane, scope, actor=actor), scope.tenant_id, version)
        _set(row, State.ROLLED_BACK, reason)
        _record(
            plane,
            session,
            scope,
            ROLLED_BACK,
            actor=actor,
            version=version,
            reason=reason,
            numbers=numbers,
        )


def advance(
    platform: Platform,
    tenant_id: str,
    *,
    reason: str,
    actor: str,
    numbers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Move the release in flight one step on: shadow to the first canary step, then the next.

    Past the last step it goes live (as `promote`).
    """
    scope, plane = _open(platform, tenant_id)
    with _changing(plane, scope, actor=actor, action="release.advance") as session:
        rows = _rows(session, plane, scope, actor=actor)
        flying = [r for r in rows if r.state in IN_FLIGHT]
        if not flying:
            raise InvalidInputError(f"tenant {tenant_id!r} has no release in flight")
        target, plan = flying[-1], dict(flying[-1].plan or {})
        plan["step"] = int(plan.get("step", -1)) + 1
        if plan["step"] >= len(plan["canary_steps"]):
            _make_live(session, plane, scope, rows, target, reason, numbers, actor=actor)
            return {"tenant": tenant_id, "version": target.version, "state": State.LIVE.value}
        _set(target, State.CANARY, reason)
        plan["step_at"] = utcnow().isoformat()
        target.plan = plan
        _record(
            plane,
            session,
            scope,
            ADVANCED,
            actor=actor,
            version=target.version,
            step=plan["step"],
            canary_percent=plan["canary_steps"][plan["step"]],
            reason=reason,
            numbers=numbers or {},
        )
    return {
        "tenant": tenant_id,
        "version": target.version,
        "state": State.CANARY.value,
        "canary_percent": plan["canary_steps"][plan["step"]],
    }


def in_flight(plane: Plane, scope: Scope, *, actor: str) -> ModelRelease | None:
    """The tenant's release in flight (shadow or canary), if any: what serving splits off."""
    query = select(ModelRelease).where(
        col(ModelRelease.tenant_id) == scope.tenant_id, col(ModelRelease.state).in_(IN_FLIGHT)
    )
    with plane.session(scope, actor=actor, action="release.read") as session:
        return session.execute(query).scalars().first()


def _plan(
    tenant_id: str, shadow_percent: float, steps: Sequence[int], min_requests: int
) -> dict[str, Any]:
    """A rollout plan, validated: shadow share in [0, 100], steps rising to 100."""
    steps = list(steps)
    rising = all(a < b for a, b in pairwise([0, *steps]))
    if not steps or not rising or steps[-1] > 100 or len(steps) > MAX_STEPS:
        raise InvalidInputError(
            f"tenant {tenant_id!r}: --canary-steps {','.join(map(str, steps)) or '(none)'}: "
            f"1 to {MAX_STEPS} rising traffic percentages, each from 1 to 100"
        )
    if not 0 <= shadow_percent <= 100 or not 1 <= min_requests <= 10_000_000:
        raise InvalidInputError(
            f"tenant {tenant_id!r}: --shadow must be 0 to 100 (percent of live requests) and "
            f"--min-requests 1 to 10,000,000 (given {shadow_percent:g} and {min_requests})"
        )
    return {
        "shadow_percent": float(shadow_percent),
        "canary_steps": steps,
        "min_requests": int(min_requests),
        "salt": secrets.token_hex(8),
        "started_at": utcnow().isoformat(),
    }


def promote(
    platform: Platform,
    tenant_id: str,
    *,
    reason: str,
    actor: str,
    version: str | None = None,
    numbers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make the release in flight (or the newest candidate, or `version`) live at once."""
    scope, plane = _open(platform, tenant_id)
    reason = _reason(tenant_id, reason)
    with _changing(plane, scope, actor=actor, action="release.promote") as session:
        rows = _rows(session, plane, scope, actor=actor)
        target = _find(rows, tenant_id, version) if version else _pending(rows)
        if target is None:
            raise InvalidInputError(
                f"tenant {tenant_id!r} has no candidate or release in flight to promote"
            )
        was = State(target.state)
        current = _make_live(session, plane, scope, rows, target, reason, numbers, actor=actor)
    return {
        "tenant": tenant_id,
        "live": target.version,
        "was": was.value,
        "retired": current and current.version,
        "reason": reason,
    }


def _make_live(
    session: TenantSession,
    plane: Plane,
    scope: Scope,
    rows: list[ModelRelease],
    target: ModelRelease,
    reason: str,
    numbers: dict[str, Any] | None,
    *,
    actor: str,
) -> ModelRelease | None:
    """`target` goes live, the live one retires, and the promotion is recorded; the retired."""
    was = State(target.state)
    _check(scope.tenant_id, target, was, State.LIVE)
    current = _live(rows)
    _switch(session, plane, scope, target, current, State.RETIRED, reason, actor=actor)
    _record(
        plane,
        session,
        scope,
        PROMOTED,
        actor=actor,
        version=target.version,
        previous_state=was.value,
        previous_live=current and current.version,
        reason=reason,
        numbers=numbers or {},
    )
    return current


def rollback(
    platform: Platform,
    tenant_id: str,
    *,
    reason: str,
    actor: str,
    numbers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stop the release in flight; with none, put the previous live version back."""
    scope, plane = _open(platform, tenant_id)
    reason = _reason(tenant_id, reason)
    with _changing(plane, scope, actor=actor, action="release.rollback") as session:
        rows = _rows(session, plane, scope, actor=actor)
        flying = [r for r in rows if r.state in IN_FLIGHT]
        current = _live(rows)
        if flying:
            target, live = flying[-1], current
            _set(target, State.ROLLED_BACK, reason)
        else:
            back = [r for r in rows if r.state == State.RETIRED]
            if current is None or not back:
                raise InvalidInputError(
                    f"tenant {tenant_id!r} has no release in flight and no earlier live version "
                    "to roll back to"
                )
            target, live = current, back[-1]
            _switch(session, plane, scope, live, current, State.ROLLED_BACK, reason, actor=actor)
        _record(
            plane,
            session,
            scope,
            ROLLED_BACK,
            actor=actor,
            version=target.version,
            live=live and live.version,
            reason=reason,
            numbers=numbers or {},
        )
    return {
        "tenant": tenant_id,
        "rolled_back": target.version,
        "live": live and live.version,
        "reason": reason,
    }


def status(platform: Platform, tenant_id: str, *, actor: str) -> dict[str, Any]:
    """Every version's state, oldest first, the live one and the last decision."""
    scope, plane = _open(platform, tenant_id)
    with plane.session(scope, actor=actor, action="release.status") as session:
        rows = _rows(session, plane, scope, actor=actor)
    decisions = plane.ledger.records(tenant_id=tenant_id, action="release.", limit=None)
    last = decisions[-1] if decisions else None
    current = _live(rows)
    flying = [r for r in rows if r.state in IN_FLIGHT]
    return {
        "tenant": tenant_id,
        "region": scope.region.value,
        "live": current and current.version,
        "shares": shares(flying[-1] if flying else None),
        "releases": [
            {
                "version": r.version,
                "state": r.state,
                "created_at": r.created_at.isoformat(),
                "updated_at": r.updated_at.isoformat(),
                "reason": r.reason,
                "plan": r.plan,
            }
            for r in rows
        ],
        "last_decision": None
        if last is None
        else {"action": last.action, "at": last.ts, "details": json.loads(last.details)},
    }


def shares(release: ModelRelease | None) -> dict[str, float]:
    """Percent of requests each arm answers now (`shadow`: live requests also scored)."""
    plan = (release.plan or {}) if release is not None else {}
    step, steps = int(plan.get("step", -1)), list(plan.get("canary_steps", []))
    canary = float(steps[step]) if release is not None and 0 <= step < len(steps) else 0.0
    shadow = float(plan.get("shadow_percent", 0.0)) if step < 0 else 0.0
    return {"live": 100.0 - canary, "canary": canary, "shadow": shadow}


def _open(platform: Platform, tenant_id: str) -> tuple[Scope, Plane]:
    scope = platform.scope(tenant_id)
    return scope, platform.plane(scope.region)


def _reason(tenant_id: str, reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise InvalidInputError(
            f"tenant {tenant_id!r}: --reason must be 1 to {MAX_REASON} characters"
        )
    return reason


@contextmanager
def _changing(plane: Plane, scope: Scope, *, actor: str, action: str) -> Iterator[TenantSession]:
    """The registry's transaction; LATEST is put back if it moved and the commit failed."""
    before = plane.artifacts.pointed(scope, KIND, actor=actor)
    try:
        with plane.session(scope, actor=actor, action=action) as session:
            yield session
    except BaseException:
        if before is not None and plane.artifacts.pointed(scope, KIND, actor=actor) != before:
            plane.artifacts.point_latest(scope, KIND, before, actor=actor)
        raise


def _rows(session: TenantSession, plane: Plane, scope: Scope, *, actor: str) -> list[ModelRelease]:
    """The tenant's releases, oldest first (locked); a model live before the registry joins it."""
    query = (
        select(ModelRelease)
        .where(col(ModelRelease.tenant_id) == scope.tenant_id)
        .order_by(col(ModelRelease.created_at), col(ModelRelease.version))
        .with_for_update()
    )
    rows = list(session.execute(query).scalars().all())
    pointed = plane.artifacts.pointed(scope, KIND, actor=actor)
    if not rows and pointed is not None:
        row = ModelRelease(
            tenant_id=scope.tenant_id, version=pointed, state=State.LIVE, reason=BACKFILLED
        )
        session.add(row)
        rows = [row]
    return rows


def _live(rows: list[ModelRelease]) -> ModelRelease | None:
    return next((r for r in rows if r.state == State.LIVE), None)


def _pending(rows: list[ModelRelease]) -> ModelRelease | None:
    """The release in flight, else the newest candidate."""
    flying = [r for r in rows if r.state in IN_FLIGHT]
    candidates = [r for r in rows if r.state == State.CANDIDATE]
    pending = flying or candidates
    return pending[-1] if pending else None


def _find(rows: list[ModelRelease], tenant_id: str, version: str) -> ModelRelease:
    found = next((r for r in rows if r.version == version), None)
    if found is None:
        raise InvalidInputError(f"tenant {tenant_id!r} has no model version {version!r}")
    return found


def _check(tenant_id: str, row: ModelRelease, was: State, to: State) -> None:
    if to not in NEXT[was]:
        raise ConflictError(
            f"tenant {tenant_id!r}: model version {row.version!r} is {was.value}; it cannot go "
            f"{to.value} (from {was.value}: {', '.join(sorted(NEXT[was])) or 'nothing'})"
        )


def _set(row: ModelRelease, state: State, reason: str | None) -> None:
    row.state = state
    row.updated_at = utcnow()
    row.reason = reason
    if state not in IN_FLIGHT:
        row.plan = None


def _switch(
    session: TenantSession,
    plane: Plane,
    scope: Scope,
    new: ModelRelease,
    old: ModelRelease | None,
    old_to: State,
    reason: str | None,
    *,
    actor: str,
) -> None:
    """`new` goes live and `old` (the live one) to `old_to`; LATEST moves before the commit."""
    if old is not None and old is not new:
        _set(old, old_to, reason)
    _set(new, State.LIVE, reason)
    session.flush()
    plane.artifacts.point_latest(scope, KIND, new.version, actor=actor)


def _record(
    plane: Plane, session: TenantSession, scope: Scope, action: str, *, actor: str, **details: Any
) -> None:
    plane.ledger.append(
        actor=actor,
        action=action,
        subject=f"model:{KIND}/{details['version']}",
        tenant_id=scope.tenant_id,
        session=session,
        details=details,
    )
