"""Raising a tenant's epsilon cap takes two officers: one requests, another approves.

Any officer who may see a tenant may lower its cap at once (`audit.caps`), or request a
raise. A raise is applied only when a platform officer authorised for the tenant's home
region, other than the requester, approves it (`audit.access.raise_decision_refusal`).
Every step is a record of the home region's ledger: `budget.raise_requested`, then
`budget.cap_changed` (naming the request, its requester and its approver) or
`budget.raise_rejected`. Refusals are audited: `officer.refused` for who may not decide,
`budget.cap_refused` for a cap above the platform's maximum or a stale form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from atlasrec.control.cap_requests import CapRequests, RequestStatus
from atlasrec.control.tables import CapRaiseRequest, Tenant
from atlasrec.errors import InvalidInputError, NotFoundError
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from audit.access import Access, Principal
from audit.caps import (
    Approval,
    CapChange,
    CapConflictError,
    change_epsilon_cap,
    check_expected,
    check_new_cap,
    parse_cap,
    parse_reason,
    refuse_cap,
)

RAISE_REQUESTED = "budget.raise_requested"
RAISE_REJECTED = "budget.raise_rejected"
REQUEST_ID = re.compile(r"^[0-9a-f]{16}$")


class UnknownRaiseRequestError(NotFoundError):
    """No raise request with this id."""


def set_cap(
    platform: Platform,
    access: Access,
    principal: Principal,
    tenant_id: str,
    cap: str | float,
    *,
    reason: str,
    expected_cap: float | None,
) -> CapChange | CapRaiseRequest:
    """The cap form: a lower (or equal) cap applies at once, a higher one is a request."""
    tenant = access.tenant(principal, tenant_id, action="budget.cap_change")
    new_cap, reason = parse_cap(cap), parse_reason(reason)
    check_expected(platform, tenant, expected_cap, actor=principal.actor)
    if new_cap <= tenant.epsilon_cap:
        return change_epsilon_cap(
            platform,
            tenant.id,
            new_cap,
            reason=reason,
            actor=principal.actor,
            expected_cap=tenant.epsilon_cap,
        )
    return request_raise(platform, tenant, new_cap, reason=reason, principal=principal)


def request_raise(
    platform: Platform, tenant: Tenant, cap: float, *, reason: str, principal: Principal
) -> CapRaiseRequest:
    """Record a pending request to raise `tenant`'s cap to `cap` (after the caller's checks)."""
    check_new_cap(platform, tenant, cap, actor=principal.actor)
    requests = CapRequests(platform.control.engine)
    request = requests.add(
        tenant.id,
        cap_then=tenant.epsilon_cap,
        requested_cap=cap,
        reason=reason,
        by=principal.officer_id,
    )
    details = {
        "request_id": request.id,
        "cap_then": request.cap_then,
        "requested_cap": cap,
        "reason": reason,
        "requested_by": principal.officer_id,
    }
    undo = partial(requests.remove, request.id)  # no request without its record
    _record_or_undo(platform, tenant, principal, RAISE_REQUESTED, details, undo)
    return request


def pending_request(
    platform: Platform, access: Access, principal: Principal, request_id: str
) -> tuple[CapRaiseRequest, Tenant]:
    """A request `principal` may decide, still pending, on an unchanged cap; else audited."""
    if not REQUEST_ID.fullmatch(request_id):
        raise InvalidInputError(f"field 'request_id': {request_id[:40]!r} is not a request id")
    request = CapRequests(platform.control.engine).get(request_id)
    if request is None:
        raise UnknownRaiseRequestError(f"no raise request {request_id!r}")
    tenant = platform.control.get_tenant(request.tenant_id)
    access.decide_raise(principal, tenant, request.requested_by)
    stale = None
    if request.status != RequestStatus.PENDING:
        by = f" by {request.decided_by}" if request.decided_by else ""
        stale = f"raise request {request.id} is already {request.status}{by}"
    elif abs(request.cap_then - tenant.epsilon_cap) > 1e-12:
        stale = (
            f"tenant {tenant.id!r}: the cap changed since raise request {request.id} was made "
            f"({request.cap_then:g}, now {tenant.epsilon_cap:g}); it must be requested again"
        )
    if stale is not None:
        refuse_cap(
            platform, tenant, CapConflictError(stale), actor=principal.actor, request_id=request.id
        )
    return request, tenant


def approve_raise(
    platform: Platform, access: Access, principal: Principal, request_id: str
) -> CapChange:
    """Approve a pending raise: the cap and the request change together, with one record."""
    request, tenant = pending_request(platform, access, principal, request_id)
    check_new_cap(platform, tenant, request.requested_cap, actor=principal.actor)
    return change_epsilon_cap(
        platform,
        tenant.id,
        request.requested_cap,
        reason=request.reason,
        actor=principal.actor,
        expected_cap=request.cap_then,
        approval=Approval(request.id, request.requested_by, principal.officer_id),
    )


def reject_raise(
    platform: Platform, access: Access, principal: Principal, request_id: str, *, reason: str
) -> CapRaiseRequest:
    """Reject a pending raise with a written reason (a ledger record); the cap stays."""
    reason = parse_reason(reason)
    request, tenant = pending_request(platform, access, principal, request_id)
    requests = CapRequests(platform.control.engine)
    if not requests.reject(request.id, by=principal.officer_id, reason=reason):
        raise CapConflictError(f"raise request {request.id} was decided meanwhile; reload")
    details = {
        "request_id": request.id,
        "requested_cap": request.requested_cap,
        "requested_by": request.requested_by,
        "rejected_by": principal.officer_id,
        "reason": reason,
    }
    undo = partial(requests.reopen, request.id)  # no decision without its record
    _record_or_undo(platform, tenant, principal, RAISE_REJECTED, details, undo)
    decided = requests.get(request.id)
    assert decided is not None
    return decided


def _record_or_undo(
    platform: Platform,
    tenant: Tenant,
    principal: Principal,
    action: str,
    details: dict[str, Any],
    undo: Callable[[], None],
) -> None:
    """Append the step's record to the home region's ledger; if that fails, undo the step."""
    try:
        platform.plane(Region(tenant.home_region)).ledger.append(
            actor=principal.actor,
            action=action,
            subject=f"tenant:{tenant.id}",
            tenant_id=tenant.id,
            details=details,
        )
    except BaseException:
        undo()
        raise
