"""Experiments on a tenant's traffic: A/B tests of model versions, and interleaving.

- **A/B**: each user is assigned to one arm (`A`, `B`, ...) by a keyed hash of its
  pseudonym, salted per experiment (sticky), by the experiment's split of users. `A` is the
  control; the analysis (`atlasrec.experiment_analysis`) compares every other arm with it.
- **Interleave**: every request of an identified user is answered by one list mixing both
  arms' rankings (`atlasrec.evaluation.interleaving`); each position's team is recorded.

An experiment and a release in flight may not overlap on one tenant's traffic, nor may two
experiments. Each arm's version must be one the registry may serve (live, candidate or
retired; never rolled back) and pass the privacy gate (`atlasrec.release_gates`). The
experiment lives in the tenant's region database (`experiments`); every decision
(created, decided, stopped) is a ledger record with its numbers.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlmodel import col, select

from atlasrec.clock import utcnow
from atlasrec.dataplane.session import TenantSession
from atlasrec.dataplane.tables import Experiment, ModelRelease
from atlasrec.errors import ConflictError, InvalidInputError, RefusedError
from atlasrec.models.bundle import KIND
from atlasrec.outcomes import METRICS
from atlasrec.platform import Plane, Platform
from atlasrec.release_gates import privacy_gate
from atlasrec.releases import IN_FLIGHT, State
from atlasrec.tenancy import Scope

CREATED = "experiment.created"
DECIDED = "experiment.decided"
STOPPED = "experiment.stopped"
KINDS = ("ab", "interleave")
ARM_NAMES = "ABCDE"
MAX_REASON = 500
SERVABLE = frozenset({State.LIVE, State.CANDIDATE, State.RETIRED})


class Status(StrEnum):
    """An experiment's state."""

    RUNNING = "running"
    DECIDED = "decided"
    INVALID = "invalid"
    """Ended by the analysis without a verdict: its assignment is broken (sample ratio)."""
    STOPPED = "stopped"


def create(
    platform: Platform,
    tenant_id: str,
    *,
    arms: Sequence[str],
    kind: str,
    metric: str,
    actor: str,
    split: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Start an experiment on the tenant's traffic; its description."""
    split = _validate(tenant_id, list(arms), kind, metric, split)
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    with plane.session(scope, actor=actor, action="experiment.read") as session:
        _servable(session, tenant_id, arms)
    for version in arms:
        artifact = plane.artifacts.get(scope, KIND, version, actor=actor)
        gate = privacy_gate(platform, scope, artifact, actor=actor)
        if not gate.passed:
            raise RefusedError(
                f"tenant {tenant_id!r}: model version {version!r} failed the privacy gate "
                f"({gate.reason}); it may not serve an experiment"
            )
    with plane.session(scope, actor=actor, action="experiment.create") as session:
        _refuse_overlap(session, tenant_id)
        _servable(session, tenant_id, arms)  # again, inside the transaction
        row = Experiment(
            tenant_id=tenant_id,
            id=secrets.token_hex(6),
            kind=kind,
            metric=metric,
            arms=list(arms),
            split=split,
            salt=secrets.token_hex(8),
            state=Status.RUNNING,
        )
        session.add(row)
        described = describe(row)
        _record(plane, session, scope, CREATED, row, actor=actor, experiment=described)
    return described


def _validate(
    tenant_id: str, arms: list[str], kind: str, metric: str, split: Sequence[float] | None
) -> list[float]:
    """The split, once the experiment's shape is checked (a clear error naming what is wrong)."""
    where = f"tenant {tenant_id!r}"
    if kind not in KINDS:
        raise InvalidInputError(f"{where}: --type {kind!r}: one of {', '.join(KINDS)}")
    if metric not in METRICS:
        raise InvalidInputError(f"{where}: --metric {metric!r}: one of {', '.join(METRICS)}")
    most = 2 if kind == "interleave" else len(ARM_NAMES)
    if not 2 <= len(arms) <= most or len(set(arms)) != len(arms):
        raise InvalidInputError(
            f"{where}: --arms {','.join(arms) or '(none)'}: 2 to {most} distinct model versions "
            f"for {kind}"
        )
    if kind == "interleave":
        if split is not None:
            raise InvalidInputError(
                f"{where}: --split does not apply to interleaving (both arms are in every list)"
            )
        return [50.0, 50.0]
    shares = [100 / len(arms)] * len(arms) if split is None else [float(s) for s in split]
    if len(shares) != len(arms) or any(not math.isfinite(s) or s <= 0 for s in shares):
        raise InvalidInputError(
            f"{where}: --split {','.join(f'{s:g}' for s in shares)}: one positive percentage "
            f"per arm ({len(arms)} arms)"
        )
    if abs(sum(shares) - 100) > 1e-6:
        raise InvalidInputError(
            f"{where}: --split {','.join(f'{s:g}' for s in shares)} sums to {sum(shares):g}, "
            "not 100"
        )
    return shares


def _servable(session: TenantSession, tenant_id: str, arms: Sequence[str]) -> None:
    """Every arm is a version of the tenant's that may serve (live, candidate or retired)."""
    query = select(ModelRelease).where(col(ModelRelease.tenant_id) == tenant_id)
    states = {r.version: State(r.state) for r in session.execute(query).scalars().all()}
    for version in arms:
        if version not in states:
            raise InvalidInputError(f"tenant {tenant_id!r} has no model version {version!r}")
        if states[version] not in SERVABLE:
            raise ConflictError(
                f"tenant {tenant_id!r}: model version {version!r} is "
                f"{states[version].value}; an experiment's arms must be live, candidate or "
                "retired versions"
            )


def _refuse_overlap(session: TenantSession, tenant_id: str) -> None:
    """Refuse a second split of the tenant's traffic: a running experiment or a release."""
    running = running_in(session, tenant_id)
    if running is not None:
        raise ConflictError(
            f"tenant {tenant_id!r}: experiment {running.id!r} is running (experiments may not "
            "overlap on one tenant's traffic): stop it first"
        )
    query = select(ModelRelease).where(
        col(ModelRelease.tenant_id) == tenant_id, col(ModelRelease.state).in_(IN_FLIGHT)
    )
    flying = session.execute(query.with_for_update()).scalars().first()
    if flying is not None:
        raise ConflictError(
            f"tenant {tenant_id!r}: the rollout of {flying.version!r} is in flight (an "
            "experiment may not overlap it on the tenant's traffic): promote or roll it back first"
        )


def running_in(session: TenantSession, tenant_id: str) -> Experiment | None:
    """The tenant's running experiment, if any (locked for the transaction)."""
    query = select(Experiment).where(
        col(Experiment.tenant_id) == tenant_id, col(Experiment.state) == Status.RUNNING
    )
    return session.execute(query.with_for_update()).scalars().first()


def running(plane: Plane, scope: Scope, *, actor: str) -> Experiment | None:
    """The tenant's running experiment, if any: what serving splits its traffic by."""
    with plane.session(scope, actor=actor, action="experiment.read") as session:
        return running_in(session, scope.tenant_id)


def stop(
    platform: Platform, tenant_id: str, experiment_id: str, *, reason: str, actor: str
) -> dict[str, Any]:
    """Stop a running experiment (its traffic returns to the live model)."""
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise InvalidInputError(
            f"tenant {tenant_id!r}: --reason must be 1 to {MAX_REASON} characters"
        )
    return _end(platform, tenant_id, experiment_id, Status.STOPPED, reason, None, actor=actor)


def decide(
    platform: Platform,
    tenant_id: str,
    experiment_id: str,
    *,
    reason: str,
    result: dict[str, Any],
    actor: str,
    valid: bool = True,
) -> dict[str, Any]:
    """End a running experiment with the analysis's decision (or invalid) and its numbers."""
    to = Status.DECIDED if valid else Status.INVALID
    return _end(platform, tenant_id, experiment_id, to, reason, result, actor=actor)


def _end(
    platform: Platform,
    tenant_id: str,
    experiment_id: str,
    to: Status,
    reason: str,
    result: dict[str, Any] | None,
    *,
    actor: str,
) -> dict[str, Any]:
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    with plane.session(scope, actor=actor, action=f"experiment.{to.value}") as session:
        row = _find(session, tenant_id, experiment_id)
        if row.state != Status.RUNNING:
            raise ConflictError(
                f"tenant {tenant_id!r}: experiment {experiment_id!r} is already {row.state}"
            )
        row.state, row.ended_at, row.reason = to, utcnow(), reason
        if result is not None:
            row.result = result
        described = describe(row)
        action = STOPPED if to is Status.STOPPED else DECIDED
        _record(
            plane,
            session,
            scope,
            action,
            row,
            actor=actor,
            state=to.value,
            reason=reason,
            result=row.result,
        )
    return described


def note_result(
    platform: Platform, tenant_id: str, experiment_id: str, result: dict[str, Any], *, actor: str
) -> None:
    """Keep the analysis's latest numbers on a running experiment (no decision yet)."""
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    with plane.session(scope, actor=actor, action="experiment.analyse") as session:
        row = _find(session, tenant_id, experiment_id)
        if row.state == Status.RUNNING:
            row.result = result


def status(platform: Platform, tenant_id: str, *, actor: str) -> dict[str, Any]:
    """The tenant's experiments, newest first, each with its last analysis."""
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    query = (
        select(Experiment)
        .where(col(Experiment.tenant_id) == tenant_id)
        .order_by(col(Experiment.created_at).desc())
    )
    with plane.session(scope, actor=actor, action="experiment.status") as session:
        rows = list(session.execute(query).scalars().all())
        return {
            "tenant": tenant_id,
            "region": scope.region.value,
            "experiments": [describe(r) for r in rows],
        }


def describe(row: Experiment) -> dict[str, Any]:
    """An experiment as JSON-ready data."""
    return {
        "id": row.id,
        "type": row.kind,
        "metric": row.metric,
        "arms": {name: version for name, version in zip(ARM_NAMES, row.arms, strict=False)},
        "split": row.split,
        "state": row.state,
        "created_at": row.created_at.isoformat(),
        "ended_at": row.ended_at and row.ended_at.isoformat(),
        "reason": row.reason,
        "result": row.result,
    }


def _find(session: TenantSession, tenant_id: str, experiment_id: str) -> Experiment:
    query = select(Experiment).where(
        col(Experiment.tenant_id) == tenant_id, col(Experiment.id) == experiment_id
    )
    row: Experiment | None = session.execute(query.with_for_update()).scalars().first()
    if row is None:
        raise InvalidInputError(f"tenant {tenant_id!r} has no experiment {experiment_id!r}")
    return row


def _record(
    plane: Plane,
    session: TenantSession,
    scope: Scope,
    action: str,
    row: Experiment,
    *,
    actor: str,
    **details: Any,
) -> None:
    plane.ledger.append(
        actor=actor,
        action=action,
        subject=f"experiment:{row.id}",
        tenant_id=scope.tenant_id,
        session=session,
        details={"id": row.id, "type": row.kind, "arms": row.arms, **details},
    )
