"""The region's `dp_runs` table as a tenant's `privacy.budget.RunStore`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from atlasrec.boundary import AuditLog
from atlasrec.clock import utcnow
from atlasrec.dataplane.plane import RegionDataPlane
from atlasrec.dataplane.session import TenantSession
from atlasrec.dataplane.tables import DpRun
from atlasrec.tenancy import Scope
from privacy.accounting import Mechanism
from privacy.budget import BudgetState, ChargedRun, DpBudget, RunStore

BUDGET_LOCK = "dp-budget:{tenant}"  # the PostgreSQL advisory lock that serialises charges


def mechanism_of(run: DpRun) -> Mechanism:
    """The mechanism a stored run charged."""
    return Mechanism(run.noise_multiplier, run.sample_rate, run.steps)


def spent_of(runs: list[DpRun]) -> float:
    """Spent epsilon: the composition recorded with the latest of `runs` (0 without one)."""
    return max((run.epsilon_total for run in runs), default=0.0)


def spent_by_tenant(session: Session, tenant_ids: Collection[str]) -> dict[str, float]:
    """`spent_of` each of `tenant_ids` (those with runs), in one query of the region."""
    query = (
        select(DpRun.tenant_id, func.max(DpRun.epsilon_total))
        .where(col(DpRun.tenant_id).in_(sorted(tenant_ids)))
        .group_by(col(DpRun.tenant_id))
    )
    return {tenant: float(spent) for tenant, spent in session.execute(query).all()}


def budget_state(runs: list[DpRun], *, cap: float, delta: float) -> BudgetState:
    """A tenant's budget from its runs as already read."""
    return BudgetState(cap, spent_of(runs), delta)


class DpRunTable:
    """The DP runs of a `TenantSession`'s tenant; audits into its region's ledger."""

    def __init__(self, session: TenantSession, ledger: AuditLog) -> None:
        self.session = session
        self.ledger = ledger
        self.tenant_id = session.scope.tenant_id

    def runs(self) -> list[DpRun]:
        """Every charged run, oldest first."""
        query = select(DpRun).order_by(col(DpRun.created_at), col(DpRun.id))
        return list(self.session.execute(query).scalars().all())

    def lock(self) -> None:
        """Take the tenant's budget lock (PostgreSQL; SQLite serialises writers itself)."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:t))"),
                {"t": BUDGET_LOCK.format(tenant=self.tenant_id)},
            )

    def mechanisms(self) -> list[Mechanism]:
        """The mechanisms of every charged run, oldest first."""
        return [mechanism_of(run) for run in self.runs()]

    def spent(self) -> float:
        """The composition recorded with the latest charge (each charge stores it)."""
        return spent_of(self.runs())

    def add(self, run: ChargedRun) -> None:
        """Store a reserved run as running."""
        m = run.charge.mechanism
        self.session.add(
            DpRun(
                id=run.id,
                tenant_id=self.tenant_id,
                kind=run.charge.kind,
                status="running",
                noise_multiplier=m.noise_multiplier,
                sample_rate=m.sample_rate,
                steps=m.steps,
                delta=run.delta,
                epsilon=run.epsilon,
                epsilon_total=run.epsilon_total,
                details=dict(run.charge.details),
                created_at=utcnow(),
            )
        )
        self.session.flush()

    def finish(self, run_id: str, status: str, details: Mapping[str, Any]) -> None:
        """Mark a run completed or failed; its charge stays."""
        run = self.session.get(DpRun, run_id)
        if run is not None:
            run.status, run.completed_at = status, utcnow()
            run.details = {**run.details, **details}

    def audit(self, action: str, subject: str, details: Mapping[str, Any]) -> None:
        """Append a record to the region's ledger, in this transaction."""
        self.ledger.append(
            actor=self.session.actor,
            action=action,
            subject=subject,
            tenant_id=self.tenant_id,
            details=dict(details),
            session=self.session,
        )

    def budget(self, *, cap: float, delta: float) -> DpBudget:
        """The tenant's budget over this table."""
        return DpBudget(self, cap=cap, delta=delta)


def budget_transactions(
    plane: RegionDataPlane[Any], scope: Scope, *, actor: str
) -> Callable[[str], AbstractContextManager[RunStore]]:
    """Transactions over the tenant's runs in `plane`, for `privacy.budget.charged_run`."""

    @contextmanager
    def transaction(action: str) -> Iterator[RunStore]:
        with plane.session(scope, actor=actor, action=action) as session:
            yield DpRunTable(session, plane.ledger)

    return transaction
