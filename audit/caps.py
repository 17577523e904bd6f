"""Changing a tenant's epsilon cap: a reasoned, audited decision of a privacy officer.

The cap lives in the control plane, the record of the change in the tenant's home-region
ledger. The record is appended in the region's transaction, the control plane is updated
(compare-and-set against the cap the officer saw) before that transaction commits, and the
cap is put back if the commit fails: a failure leaves neither the change nor its record.

A cap lowered to or below what is already spent stops the tenant's DP training and its
federation rounds: both charge through `privacy.budget.DpBudget.reserve`, which refuses any
run that would take the composed epsilon past the (new) cap.
"""

from __future__ import annotations

from dataclasses import dataclass

from atlasrec.control.service import MAX_EPSILON_CAP
from atlasrec.dataplane.dp_runs import DpRunTable
from atlasrec.errors import ConflictError, InvalidInputError
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope
from privacy.budget import BudgetState

CAP_CHANGED = "budget.cap_changed"
MIN_REASON, MAX_REASON = 10, 2000


class CapConflictError(ConflictError):
    """The cap changed since the officer looked at it."""


@dataclass(frozen=True)
class CapChange:
    """An applied change of a tenant's cap."""

    tenant_id: str
    region: str
    old_cap: float
    new_cap: float
    spent: float
    ledger_seq: int

    @property
    def stops_training(self) -> bool:
        """Whether the new cap leaves nothing to spend (DP training and federation stop)."""
        return BudgetState(self.new_cap, self.spent).exhausted


def parse_cap(value: str | float) -> float:
    """A cap from user input: a finite number in (0, MAX_EPSILON_CAP]; the error names the field."""
    try:
        cap = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"field 'cap': {value!r} is not a number") from None
    if not 0 < cap <= MAX_EPSILON_CAP:  # NaN and infinity fail the comparison
        raise InvalidInputError(
            f"field 'cap': must be a finite number > 0 and <= {MAX_EPSILON_CAP:g}"
        )
    return cap


def parse_reason(value: str) -> str:
    """A written reason: MIN_REASON to MAX_REASON characters once trimmed."""
    reason = " ".join(value.split())
    if not MIN_REASON <= len(reason) <= MAX_REASON:
        raise InvalidInputError(
            f"field 'reason': write {MIN_REASON} to {MAX_REASON} characters explaining the change"
        )
    return reason


def change_epsilon_cap(
    platform: Platform,
    tenant_id: str,
    new_cap: float,
    *,
    reason: str,
    actor: str,
    expected_cap: float | None = None,
) -> CapChange:
    """Set a tenant's cap with a written reason; the change is a ledger record of its region.

    `expected_cap` is the cap the officer saw: if it changed meanwhile, nothing is done.
    """
    new_cap = parse_cap(new_cap)
    reason = parse_reason(reason)
    tenant = platform.control.get_tenant(tenant_id)
    old = tenant.epsilon_cap
    if expected_cap is not None and abs(expected_cap - old) > 1e-12:
        raise CapConflictError(
            f"tenant {tenant_id!r}: the cap changed meanwhile (now {old:g}); reload and retry"
        )
    scope = Scope(tenant_id, Region(tenant.home_region))
    plane = platform.plane(scope.region)
    applied = False
    try:
        with plane.session(scope, actor=actor, action="budget.cap_change") as session:
            runs = DpRunTable(session, plane.ledger)
            runs.lock()  # the lock `DpBudget.reserve` takes: no charge lands mid-change
            state = BudgetState(new_cap, runs.spent(), tenant.delta)
            spent = state.spent
            record = plane.ledger.append(
                actor=actor,
                action=CAP_CHANGED,
                subject=f"tenant:{tenant_id}",
                tenant_id=tenant_id,
                session=session,
                details={
                    "old_cap": old,
                    "new_cap": new_cap,
                    "reason": reason,
                    "spent": spent,
                    "stops_training": state.exhausted,
                },
            )
            if not platform.control.set_epsilon_cap(tenant_id, expected=old, new=new_cap):
                raise CapConflictError(
                    f"tenant {tenant_id!r}: the cap changed meanwhile; reload and retry"
                )
            applied = True
    except BaseException:
        if applied:  # the region's commit failed after the control plane changed: undo it
            platform.control.set_epsilon_cap(tenant_id, expected=new_cap, new=old)
        raise
    return CapChange(tenant_id, scope.region.value, old, new_cap, spent, record.seq)
