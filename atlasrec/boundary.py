"""The one place where tenant and region boundaries are enforced. Every refusal is audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sqlmodel import Session

from atlasrec.errors import (
    BoundaryViolation,
    ConfigError,
    CrossRegionError,
    CrossTenantError,
    UnknownTenantError,
)
from atlasrec.request_ids import RequestIds
from atlasrec.tenancy import Region, Scope, SharingPolicy

REFUSED = "boundary.refused"


class AuditLog(Protocol):
    """Where a region's audit records go (the hash-chained `audit.ledger.AuditLedger`)."""

    def append(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        tenant_id: str | None = None,
        details: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> object:
        """Append a record; inside `session`, it commits or rolls back with it."""


class Boundary:
    """Guards one region's data plane: admits a scope only for its own tenant and region."""

    def __init__(
        self,
        region: Region,
        audit: AuditLog,
        home_of: Callable[[str], Region | None],
        fallback_of: Callable[[str], Region | None],
        request_ids: RequestIds,
    ) -> None:
        self.region = region
        self.audit = audit
        self._home_of = home_of
        self._fallback_of = fallback_of
        self.request_ids = request_ids
        """Issues and checks the region's tenant-bound request ids (`atlasrec.request_ids`)."""

    def require_region(self, region: Region, what: str) -> None:
        """Refuse (`ConfigError`) to guard `what` of `region` with this region's boundary."""
        if region != self.region:
            raise ConfigError(
                f"{what} of region {region.value!r} was given the boundary of region "
                f"{self.region.value!r}"
            )

    def admit(
        self,
        scope: Scope,
        *,
        actor: str,
        action: str,
        subject: str = "",
        target_tenant: str | None = None,
    ) -> None:
        """Allow `action` by `scope` here, or audit the refusal and raise a typed error.

        A scope is admitted when its region is this data plane's region, its tenant exists
        and is homed in that region, and any `target_tenant` it reaches for is itself.
        """
        error = self.check(scope, action=action, target_tenant=target_tenant)
        if error is not None:
            self.refuse(
                scope,
                error,
                actor=actor,
                action=action,
                subject=subject,
                target_tenant=target_tenant,
            )

    def admit_fallback(self, tenant_id: str, *, actor: str, action: str) -> None:
        """Allow `action` on the non-personal fallback copy of a tenant homed elsewhere.

        Admitted only where this region is the tenant's fallback region now (a `global`
        tenant's opt-in, `atlasrec.fallback`); a refusal is audited here and raised.
        """
        home = self._home_of(tenant_id)
        if home is None:
            self.refuse(
                Scope(tenant_id, self.region),
                UnknownTenantError(tenant_id),
                actor=actor,
                action=action,
            )
        elif self._fallback_of(tenant_id) != self.region:
            error = CrossRegionError(
                f"tenant {tenant_id!r} is homed in region {home.value!r} and has not chosen "
                f"{self.region.value!r} as its fallback region"
            )
            self.refuse(Scope(tenant_id, self.region), error, actor=actor, action=action)

    def admit_request_ref(
        self, scope: Scope, request_id: str, *, actor: str, action: str, field: str
    ) -> None:
        """Allow `scope` to refer to a served request only if it was issued to that tenant here.

        Another tenant's request id, another region's or a made-up one is refused: the
        refusal is audited (with the id and the field that carried it) and raised.
        """
        if not self.request_ids.issued_to(scope.tenant_id, request_id):
            error = CrossTenantError(
                f"tenant {scope.tenant_id!r}: {field}: {request_id!r} is not a request served "
                f"to this tenant in region {self.region.value!r}; an event is attributed only "
                "to its own tenant's requests"
            )
            self.refuse(
                scope, error, actor=actor, action=action, subject=field, request_id=request_id
            )

    def check(
        self, scope: Scope, *, action: str, target_tenant: str | None = None
    ) -> BoundaryViolation | UnknownTenantError | None:
        """Why `admit` would refuse (an error to raise), or None: nothing is recorded."""
        home = self._home_of(scope.tenant_id)
        if home is None:
            return UnknownTenantError(scope.tenant_id)
        if scope.region != self.region:
            return CrossRegionError(
                f"scope {scope} cannot {action} in region {self.region.value!r}: "
                f"tenant {scope.tenant_id!r} is homed in {home.value!r}"
            )
        if home != scope.region:
            return CrossRegionError(
                f"tenant {scope.tenant_id!r} is homed in region {home.value!r}, "
                f"not {scope.region.value!r}"
            )
        if target_tenant is not None and target_tenant != scope.tenant_id:
            return CrossTenantError(
                f"scope {scope} cannot {action} data of tenant {target_tenant!r}"
            )
        return None

    def refuse(
        self,
        scope: Scope,
        error: Exception,
        *,
        actor: str,
        action: str,
        subject: str = "",
        **details: Any,
    ) -> None:
        """Write the refusal to this region's ledger (in its own transaction) and raise."""
        self.record(scope, error, actor=actor, action=action, subject=subject, **details)
        raise error

    def record(
        self,
        scope: Scope,
        error: Exception,
        *,
        actor: str,
        action: str,
        subject: str = "",
        **details: Any,
    ) -> None:
        """Write a refusal to this region's ledger (`refuse` without the raise)."""
        self.audit.append(
            actor=actor,
            action=REFUSED,
            subject=subject or action,
            tenant_id=scope.tenant_id,
            details={
                "attempted": action,
                "scope_tenant": scope.tenant_id,
                "scope_region": scope.region.value,
                "error": type(error).__name__,
                "reason": str(error),
                **{k: v for k, v in details.items() if v is not None},
            },
        )


def federation_refusal(
    tenant_id: str,
    home: Region | None,
    sharing: SharingPolicy | None,
    region: Region,
    *,
    cross_region: bool = False,
) -> str | None:
    """Why `tenant_id` may not contribute to a federation in `region`, or None if it may.

    The one rule every federation path checks (client join, the aggregator's residency
    guard, the export of a region's share to the cross-region tier):
    - a `solo` tenant never contributes;
    - a tenant contributes only in its home region;
    - what leaves the region (`cross_region`) may come only from `global` tenants.
    """
    if home is None or sharing is None:
        return f"unknown tenant {tenant_id!r}"
    if sharing == SharingPolicy.SOLO:
        return f"tenant {tenant_id!r} is a solo tenant: it never joins a federation"
    if home != region:
        return (
            f"tenant {tenant_id!r} is homed in region {home.value!r}, not in the aggregator's "
            f"region {region.value!r}"
        )
    if cross_region and sharing != SharingPolicy.GLOBAL:
        return (
            f"tenant {tenant_id!r} has sharing {sharing.value!r}: nothing derived from it may "
            f"leave region {region.value!r}"
        )
    return None
