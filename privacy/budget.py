"""A tenant's DP budget ledger, persisted in its home region: every run, and the hard cap.

A run is charged in full when it is reserved, before its first step, under a lock, so two
concurrent runs cannot both fit into the same remaining budget; a run that would push the
composed epsilon past the cap is refused and never starts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select

from atlasrec.clock import utcnow
from atlasrec.dataplane.session import TenantSession
from atlasrec.dataplane.tables import DpRun
from atlasrec.errors import AtlasRecError
from audit.ledger import Ledger
from privacy.accounting import Mechanism, epsilon


class BudgetExceededError(AtlasRecError):
    """A DP run would take the tenant past its epsilon cap."""


@dataclass(frozen=True)
class BudgetState:
    """Spent and remaining epsilon of a tenant."""

    cap: float
    delta: float
    spent: float

    @property
    def remaining(self) -> float:
        """Budget left (never negative)."""
        return max(0.0, self.cap - self.spent)


class PrivacyLedger:
    """DP runs of the tenant of a `TenantSession`."""

    def __init__(self, session: TenantSession, *, cap: float, delta: float) -> None:
        self.session = session
        self.cap = cap
        self.delta = delta

    def runs(self) -> list[DpRun]:
        """Every charged run, oldest first."""
        query = select(DpRun).order_by(col(DpRun.created_at), col(DpRun.id))
        return list(self.session.execute(query).scalars().all())

    @staticmethod
    def mechanisms(runs: list[DpRun]) -> list[Mechanism]:
        """The mechanisms of runs, for composition."""
        return [Mechanism(r.noise_multiplier, r.sample_rate, r.steps) for r in runs]

    def state(self) -> BudgetState:
        """Composed epsilon of every charged run against the cap."""
        return BudgetState(self.cap, self.delta, epsilon(self.mechanisms(self.runs()), self.delta))

    def _lock(self) -> None:
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:t))"),
                {"t": f"dp-budget:{self.session.scope.tenant_id}"},
            )

    def preview(self, mechanism: Mechanism) -> tuple[float, float]:
        """(spent now, spent after `mechanism`): what `reserve` would compare to the cap."""
        prior = self.mechanisms(self.runs())
        return epsilon(prior, self.delta), epsilon([*prior, mechanism], self.delta)

    def fits(self, mechanism: Mechanism) -> bool:
        """Whether `mechanism` fits under the cap now (`reserve` still decides, under a lock)."""
        return self.preview(mechanism)[1] <= self.cap + 1e-9

    def reserve(self, mechanism: Mechanism, *, kind: str, details: dict[str, Any]) -> DpRun:
        """Charge a run before it starts, or raise BudgetExceededError (nothing charged)."""
        self._lock()
        before, after = self.preview(mechanism)
        alone = epsilon([mechanism], self.delta)
        if after > self.cap + 1e-9:
            raise BudgetExceededError(
                f"tenant {self.session.scope.tenant_id!r}: this {kind} run needs epsilon "
                f"{after - before:.3f} more (total {after:.3f}) but the cap is {self.cap:g} "
                f"with {max(0.0, self.cap - before):.3f} left"
            )
        run = DpRun(
            id=uuid.uuid4().hex,
            tenant_id=self.session.scope.tenant_id,
            kind=kind,
            status="running",
            noise_multiplier=mechanism.noise_multiplier,
            sample_rate=mechanism.sample_rate,
            steps=mechanism.steps,
            delta=self.delta,
            epsilon=alone,
            epsilon_total=after,
            details=details,
            created_at=utcnow(),
        )
        self.session.add(run)
        self.session.flush()
        return run


def audit_charge(
    ledger: Ledger, session: TenantSession, run: DpRun, *, cap: float, actor: str
) -> None:
    """Record a reserved charge in the region's audit ledger, in the same transaction."""
    ledger.append(
        actor=actor,
        action="dp.charged",
        subject=f"dp_run:{run.id}",
        tenant_id=run.tenant_id,
        session=session,
        details={
            "kind": run.kind,
            "epsilon": run.epsilon,
            "epsilon_total": run.epsilon_total,
            "cap": cap,
            "noise_multiplier": run.noise_multiplier,
            "sample_rate": run.sample_rate,
            "steps": run.steps,
            "delta": run.delta,
        },
    )
