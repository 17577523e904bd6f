"""A tenant's DP budget: the one definition of spent, remaining and fits, and charged runs.

A run is charged in full when it is reserved, before its first step, under a lock, so two
concurrent runs cannot both fit into the same remaining budget; a run that would push the
composed epsilon past the cap is refused and never starts. Where the runs are stored is the
caller's `RunStore` (the region's `dp_runs` table: `atlasrec.dataplane.dp_runs`), as
Opacus keeps its accountants' maths apart from their stored state.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from atlasrec.errors import AtlasRecError
from privacy.accounting import Mechanism, epsilon

TOLERANCE = 1e-9  # epsilon within this of the cap counts as at the cap
CHARGED = "dp.charged"


class BudgetExceededError(AtlasRecError):
    """A DP run would take the tenant past its epsilon cap."""


@dataclass(frozen=True)
class BudgetState:
    """Spent epsilon against a cap: the only place spent, remaining and fits are defined."""

    cap: float
    spent: float
    delta: float | None = None

    @property
    def remaining(self) -> float:
        """Budget left (never negative)."""
        return max(0.0, self.cap - self.spent)

    @property
    def exhausted(self) -> bool:
        """Whether nothing is left to spend."""
        return self.spent >= self.cap - TOLERANCE

    def fits(self, total: float) -> bool:
        """Whether a composed total of `total` epsilon stays within the cap."""
        return total <= self.cap + TOLERANCE


@dataclass(frozen=True)
class Charge:
    """A mechanism to charge as one run of `kind` (its id is fixed before it is reserved)."""

    mechanism: Mechanism
    kind: str
    details: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class ChargedRun:
    """A reserved run: its charge, its own epsilon and the composition up to it."""

    charge: Charge
    delta: float
    epsilon: float
    epsilon_total: float

    @property
    def id(self) -> str:
        """The run's id."""
        return self.charge.id


class RunStore(Protocol):
    """One tenant's charged runs inside one transaction, and its audit trail."""

    tenant_id: str

    def lock(self) -> None:
        """Serialise charges of this tenant until the transaction ends."""

    def mechanisms(self) -> list[Mechanism]:
        """The mechanisms of every charged run, oldest first."""

    def spent(self) -> float:
        """The composed epsilon recorded with the latest charge (0 without one)."""

    def add(self, run: ChargedRun) -> None:
        """Store a reserved run as running."""

    def finish(self, run_id: str, status: str, details: Mapping[str, Any]) -> None:
        """Mark a run completed or failed; its charge stays."""

    def audit(self, action: str, subject: str, details: Mapping[str, Any]) -> None:
        """Append a record to the region's audit ledger, in this transaction."""


class DpBudget:
    """A tenant's DP budget over a `RunStore`: its state, and reservations under the cap."""

    def __init__(self, store: RunStore, *, cap: float, delta: float) -> None:
        self.store = store
        self.cap = cap
        self.delta = delta

    def state(self) -> BudgetState:
        """Spent (as composed by the latest charge) against the cap."""
        return BudgetState(self.cap, self.store.spent(), self.delta)

    def preview(self, mechanism: Mechanism) -> tuple[float, float]:
        """(spent now, spent after `mechanism`): what `reserve` compares to the cap."""
        prior = self.store.mechanisms()
        return epsilon(prior, self.delta), epsilon([*prior, mechanism], self.delta)

    def fits(self, mechanism: Mechanism) -> bool:
        """Whether `mechanism` fits under the cap now (`reserve` still decides, under a lock)."""
        before, after = self.preview(mechanism)
        return BudgetState(self.cap, before, self.delta).fits(after)

    def reserve(self, charge: Charge) -> ChargedRun:
        """Charge a run before it starts, or raise BudgetExceededError (nothing charged)."""
        self.store.lock()
        before, after = self.preview(charge.mechanism)
        state = BudgetState(self.cap, before, self.delta)
        if not state.fits(after):
            raise BudgetExceededError(
                f"tenant {self.store.tenant_id!r}: this {charge.kind} run needs epsilon "
                f"{after - before:.3f} more (total {after:.3f}) but the cap is {self.cap:g} "
                f"with {state.remaining:.3f} left"
            )
        run = ChargedRun(charge, self.delta, epsilon([charge.mechanism], self.delta), after)
        self.store.add(run)
        return run


def charge_details(run: ChargedRun, cap: float) -> dict[str, Any]:
    """What the audit ledger records about a charge."""
    m = run.charge.mechanism
    return {
        "kind": run.charge.kind,
        "epsilon": run.epsilon,
        "epsilon_total": run.epsilon_total,
        "cap": cap,
        "noise_multiplier": m.noise_multiplier,
        "sample_rate": m.sample_rate,
        "steps": m.steps,
        "delta": run.delta,
    }


def reserve_audited(budget: DpBudget, charges: Sequence[Charge]) -> list[ChargedRun]:
    """Reserve every charge, or none, and audit each in the same transaction."""
    runs = [budget.reserve(charge) for charge in charges]
    for run in runs:
        budget.store.audit(CHARGED, f"dp_run:{run.id}", charge_details(run, budget.cap))
    return runs


Transaction = Callable[[str], AbstractContextManager[RunStore]]
Plan = Callable[[BudgetState], Sequence[Charge]]


@dataclass
class ChargedRuns:
    """The runs a `charged_run` block reserved; set `model_version` for their closing."""

    runs: list[ChargedRun]
    model_version: str | None = None

    def of_kind(self, kind: str) -> ChargedRun | None:
        """The run of `kind`, if one was charged."""
        return next((r for r in self.runs if r.charge.kind == kind), None)


@contextmanager
def charged_run(
    transaction: Transaction, *, purpose: str, cap: float, delta: float, plan: Plan
) -> Iterator[ChargedRuns]:
    """Reserve and audit what `plan` asks for, run the block, close the runs.

    `plan` sees the budget inside the reserving transaction and returns the charges (or
    raises BudgetExceededError). The runs close as completed when the block returns and as
    failed when it raises; their charge stays either way (the data was used).
    """
    with transaction(f"{purpose}.reserve") as store:
        budget = DpBudget(store, cap=cap, delta=delta)
        charged = ChargedRuns(reserve_audited(budget, plan(budget.state())))
    try:
        yield charged
    except BaseException:
        _close(transaction, purpose, charged.runs, "failed", None)
        raise
    _close(transaction, purpose, charged.runs, "completed", charged.model_version)


def _close(
    transaction: Transaction,
    purpose: str,
    runs: list[ChargedRun],
    status: str,
    version: str | None,
) -> None:
    if not runs:
        return
    with transaction(f"{purpose}.finish") as store:
        for run in runs:
            store.finish(run.id, status, {"model_version": version})
