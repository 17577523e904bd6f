"""Changing a tenant's epsilon cap: a reasoned, audited decision of privacy officers.

Lowering is one officer's decision. Raising is a request (`audit.cap_requests`) that a second
officer approves; the approval applies it here. No cap goes above the platform's maximum
(`Settings.max_epsilon_cap`).

The cap lives in the control plane, the record of the change in the tenant's home-region
ledger. The record is appended in the region's transaction, the control plane is updated
(compare-and-set against the cap the officer saw, and the request approved with it) before
that transaction commits, and both are put back if the commit fails: a failure leaves
neither the change nor its record. A refused change (above the maximum, or a stale form)
is a `budget.cap_refused` record.

A cap lowered to or below what is already spent stops the tenant's DP training and its
federation rounds: both charge through `privacy.budget.DpBudget.reserve`, which refuses any
run that would take the composed epsilon past the (new) cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atlasrec.control.cap_requests import CapRequests
from atlasrec.control.service import CapAboveMaximumError, check_cap
from atlasrec.control.tables import Tenant
from atlasrec.dataplane.dp_runs import DpRunTable
from atlasrec.errors import AtlasRecError, ConflictError, InvalidInputError
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope
from privacy.budget import BudgetState

CAP_CHANGED = "budget.cap_changed"
CAP_REFUSED = "budget.cap_refused"
MIN_REASON, MAX_REASON = 10, 2000


class CapConflictError(ConflictError):
    """The cap (or the request) changed since the officer looked at it."""


@dataclass(frozen=True)
class Approval:
    """The approved raise request a change applies, and who approved it."""

    request_id: str
    requested_by: str
    approved_by: str


@dataclass(frozen=True)
class CapChange:
    """An applied change of a tenant's cap."""

    tenant_id: str
    region: str
    old_cap: float
    new_cap: float
    spent: float
    ledger_seq: int
    request_id: str | None = None

    @property
    def stops_training(self) -> bool:
        """Whether the new cap leaves nothing to spend (DP training and federation stop)."""
        return BudgetState(self.new_cap, self.spent).exhausted


def parse_cap(value: str | float) -> float:
    """A cap from user input: a finite number > 0 (the maximum is checked with the tenant)."""
    try:
        cap = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"field 'cap': {value!r} is not a number") from None
    if not 0 < cap < float("inf"):  # NaN fails the comparison
        raise InvalidInputError("field 'cap': must be a finite number > 0")
    return cap


def refuse_cap(
    platform: Platform, tenant: Tenant, error: AtlasRecError, *, actor: str, **details: Any
) -> None:
    """Record a refused cap change in the tenant's home-region ledger, then raise `error`."""
    platform.plane(Region(tenant.home_region)).ledger.append(
        actor=actor,
        action=CAP_REFUSED,
        subject=f"tenant:{tenant.id}",
        tenant_id=tenant.id,
        details={"reason": str(error), **details},
    )
    raise error


def check_new_cap(platform: Platform, tenant: Tenant, cap: float, *, actor: str) -> float:
    """`cap` if it is within the platform's maximum; else audit the refusal and raise."""
    try:
        return check_cap(tenant.id, cap, platform.control.max_epsilon_cap)
    except CapAboveMaximumError as exc:
        refuse_cap(platform, tenant, exc, actor=actor, requested_cap=cap)
        raise AssertionError("unreachable") from exc


def check_expected(
    platform: Platform, tenant: Tenant, expected: float | None, *, actor: str
) -> None:
    """Refuse (audited) a form that showed a cap other than the tenant's cap now."""
    if expected is not None and abs(expected - tenant.epsilon_cap) > 1e-12:
        error = CapConflictError(
            f"tenant {tenant.id!r}: the cap changed since the form was loaded (it showed "
            f"{expected:g}, now {tenant.epsilon_cap:g}); reload and retry"
        )
        refuse_cap(platform, tenant, error, actor=actor, form_cap=expected)


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
    approval: Approval | None = None,
) -> CapChange:
    """Set a tenant's cap with a written reason; the change is a ledger record of its region.

    `expected_cap` is the cap the officer saw: if it changed meanwhile, nothing is done.
    A raise is applied only with its `approval` (`audit.cap_requests`), which is marked
    approved in the control plane together with the cap.
    """
    new_cap = parse_cap(new_cap)
    reason = parse_reason(reason)
    tenant = platform.control.get_tenant(tenant_id)
    check_expected(platform, tenant, expected_cap, actor=actor)
    check_new_cap(platform, tenant, new_cap, actor=actor)
    old = tenant.epsilon_cap
    if new_cap > old and approval is None:
        raise InvalidInputError(
            f"tenant {tenant_id!r}: raising the cap from {old:g} to {new_cap:g} is a request "
            "that a second officer approves (`atlasrec privacy request-raise`, or the audit UI)"
        )
    scope = Scope(tenant_id, Region(tenant.home_region))
    plane = platform.plane(scope.region)
    approving = None if approval is None else (approval.request_id, approval.approved_by)
    applied = False
    try:
        with plane.session(scope, actor=actor, action="budget.cap_change") as session:
            runs = DpRunTable(session, plane.ledger)
            runs.lock()  # the lock `DpBudget.reserve` takes: no charge lands mid-change
            state = BudgetState(new_cap, runs.spent(), tenant.delta)
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
                    "spent": state.spent,
                    "stops_training": state.exhausted,
                    **({} if approval is None else vars(approval)),
                },
            )
            if not platform.control.set_epsilon_cap(
                tenant_id, expected=old, new=new_cap, approving=approving
            ):
                raise CapConflictError(
                    f"tenant {tenant_id!r}: the cap or the request changed meanwhile; reload "
                    "and retry"
                )
            applied = True
    except BaseException:
        if applied:  # the region's commit failed after the control plane changed: undo it
            _undo(platform, tenant_id, old, new_cap, approval)
        raise
    request_id = None if approval is None else approval.request_id
    return CapChange(
        tenant_id, scope.region.value, old, new_cap, state.spent, record.seq, request_id
    )


def _undo(
    platform: Platform, tenant_id: str, old: float, new: float, approval: Approval | None
) -> None:
    """Put the control plane back as it was before a change whose record did not commit."""
    platform.control.set_epsilon_cap(tenant_id, expected=new, new=old)
    if approval is not None:
        CapRequests(platform.control.engine).reopen(approval.request_id)
