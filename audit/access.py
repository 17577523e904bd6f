"""Who may see what in a regional audit UI: every authorisation decision is made here.

A regional app is pinned to its region and shows only tenants homed there. Within it:

- a `tenant` officer may see exactly their own tenant;
- a `platform` officer may see exactly the tenants homed in a region they are authorised
  for (which must be the app's region), and the region-wide records of that region's ledger;
- what a region's ledger records about a tenant (read by a peer region's UI, see
  `audit.ui.routes.peer_api`) is for whoever may see that tenant in its home region.

`may_see`, `may_see_region` and `may_see_records` are the pure rules; `Access` applies them
to requests, writing every refusal to the region's ledger before raising `AccessRefusedError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from atlasrec.control.officers import OfficerRole
from atlasrec.control.tables import Officer, Tenant
from atlasrec.errors import RefusedError, UnknownTenantError
from atlasrec.platform import Platform
from atlasrec.tenancy import TENANT_ID_PATTERN, Region

REFUSED = "officer.refused"


class AccessRefusedError(RefusedError):
    """An officer asked for something outside their authority (audited)."""


class CredentialRefusedError(AccessRefusedError):
    """A request's credential proved no officer (missing, forged, expired; audited)."""


@dataclass(frozen=True)
class Principal:
    """A signed-in officer, as the rules see them."""

    officer_id: str
    role: OfficerRole
    regions: frozenset[Region]
    tenant_id: str | None

    @classmethod
    def of(cls, officer: Officer) -> Principal:
        """The principal of an officer account."""
        return cls(
            officer.id,
            OfficerRole(officer.role),
            frozenset(Region(r) for r in officer.regions),
            officer.tenant_id,
        )

    @property
    def actor(self) -> str:
        """The actor name in ledger records."""
        return f"officer:{self.officer_id}"


def may_see(principal: Principal, tenant_id: str, home: Region | None, app: Region) -> bool:
    """Whether `principal` may see tenant `tenant_id` (homed in `home`) in the app of `app`."""
    if home is None or home != app:
        return False
    if principal.role == OfficerRole.TENANT:
        return principal.tenant_id == tenant_id
    return home in principal.regions


def may_see_region(principal: Principal, app: Region) -> bool:
    """Whether `principal` may see the region-wide records of `app`'s ledger."""
    return principal.role == OfficerRole.PLATFORM and app in principal.regions


def may_see_records(
    principal: Principal, tenant_id: str, home: Region | None, ledger: Region
) -> bool:
    """Whether `principal` may see the records about `tenant_id` that `ledger`'s region holds.

    Those who may see the tenant in its home region may see what any region recorded about
    it (a refused crossing, say); a platform officer of `ledger`'s region sees them anyway.
    """
    if home is not None and may_see(principal, tenant_id, home, home):
        return True
    return may_see_region(principal, ledger)


def raise_decision_refusal(principal: Principal, home: Region, requested_by: str) -> str | None:
    """Why `principal` may not decide a raise of the cap of a tenant homed in `home`.

    None: they may. Two people: a platform officer of `home`, never the requester.
    """
    if principal.role != OfficerRole.PLATFORM:
        return (
            f"officer {principal.officer_id!r} is a tenant officer: only a platform officer "
            "may approve or reject a raise of a cap"
        )
    if home not in principal.regions:
        return (
            f"officer {principal.officer_id!r} is not authorised for region {home.value!r}, "
            "where the tenant is homed"
        )
    if principal.officer_id == requested_by:
        return (
            f"officer {principal.officer_id!r} requested this raise: another platform officer "
            "must decide it (two people)"
        )
    return None


class Access:
    """The authorisation of one regional app's officers; refusals go to its ledger."""

    def __init__(self, platform: Platform, region: Region) -> None:
        self.platform = platform
        self.region = region

    def _home(self, tenant_id: str) -> Region | None:
        return self.platform.control.home_region_of(tenant_id)

    def can_sign_in(self, principal: Principal) -> bool:
        """Whether the officer has any authority in this region."""
        if principal.role == OfficerRole.PLATFORM:
            return may_see_region(principal, self.region)
        tenant = principal.tenant_id
        return tenant is not None and self._home(tenant) == self.region

    def require_sign_in(self, principal: Principal, *, action: str = "audit.sign_in") -> None:
        """Allow an officer with authority here, or audit the refusal and raise."""
        if not self.can_sign_in(principal):
            self.refuse(
                principal,
                action,
                f"officer {principal.officer_id!r} has no authority in region "
                f"{self.region.value!r}",
            )

    def tenant(self, principal: Principal, tenant_id: str, *, action: str) -> Tenant:
        """The tenant, if `principal` may see it here; otherwise audit and raise.

        An id that cannot name a tenant, or names no tenant, is `UnknownTenantError` for an
        officer who could see every tenant of the region, and a refusal for anyone else
        (which does not tell them whether the tenant exists).
        """
        home = self._home(tenant_id) if TENANT_ID_PATTERN.fullmatch(tenant_id) else None
        if may_see(principal, tenant_id, home, self.region):
            return self.platform.control.get_tenant(tenant_id)
        if home is None and may_see_region(principal, self.region):
            raise UnknownTenantError(tenant_id)
        if home is not None and home != self.region and may_see_region(principal, self.region):
            reason = (
                f"tenant {tenant_id!r} is homed in region {home.value!r}; this is the "
                f"{self.region.value!r} audit UI"
            )
        else:
            reason = f"officer {principal.officer_id!r} may not see tenant {tenant_id!r}"
        self.refuse(principal, action, reason, tenant_id=tenant_id if home is not None else None)
        raise AssertionError("unreachable")

    def tenant_records(self, principal: Principal, tenant_id: str, *, action: str) -> None:
        """Allow reading what this region's ledger holds about a tenant, or audit and raise."""
        home = self._home(tenant_id) if TENANT_ID_PATTERN.fullmatch(tenant_id) else None
        if not may_see_records(principal, tenant_id, home, self.region):
            self.refuse(
                principal,
                action,
                f"officer {principal.officer_id!r} may not see tenant {tenant_id!r}'s records",
                tenant_id=tenant_id if home is not None else None,
            )

    def decide_raise(self, principal: Principal, tenant: Tenant, requested_by: str) -> None:
        """Allow `principal` to approve or reject a raise of `tenant`'s cap, or audit and raise."""
        home = Region(tenant.home_region)
        reason = raise_decision_refusal(principal, home, requested_by)
        if reason is None and home != self.region:
            reason = (
                f"tenant {tenant.id!r} is homed in region {home.value!r}; this is the "
                f"{self.region.value!r} audit UI"
            )
        if reason is not None:
            self.refuse(principal, "budget.raise_decide", reason, tenant_id=tenant.id)

    def region_wide(self, principal: Principal, *, action: str) -> None:
        """Allow reading region-wide records, or audit the refusal and raise."""
        if not may_see_region(principal, self.region):
            self.refuse(
                principal,
                action,
                f"officer {principal.officer_id!r} may not see region "
                f"{self.region.value!r}'s region-wide records",
            )

    def visible_tenants(self, principal: Principal) -> list[Tenant]:
        """The tenants of this region the officer may see, by id."""
        return [
            t
            for t in self.platform.control.list_tenants(self.region)
            if may_see(principal, t.id, Region(t.home_region), self.region)
        ]

    def log_tenants(
        self, principal: Principal, tenant_id: str | None, *, action: str
    ) -> set[str] | None:
        """Whose ledger records the officer may search (None: the whole region's).

        `tenant_id`'s if given (and allowed), else the whole region's for a platform
        officer, else their own tenant's.
        """
        if tenant_id is not None:
            return {self.tenant(principal, tenant_id, action=action).id}
        if may_see_region(principal, self.region):
            return None
        if principal.tenant_id is not None and self.can_sign_in(principal):
            return {principal.tenant_id}
        self.refuse(principal, action, f"officer {principal.officer_id!r} may not read this log")
        raise AssertionError("unreachable")

    def refuse_credential(self, claimed: str | None, action: str, reason: str) -> None:
        """Write the refusal of a credential that proved no officer, then raise.

        `claimed` is the officer the credential named, if it could be read (unproven).
        """
        self.platform.plane(self.region).ledger.append(
            actor=f"unverified:{claimed}" if claimed else "unverified",
            action=REFUSED,
            subject=f"region:{self.region.value}",
            details={"attempted": action, "claimed_officer": claimed, "reason": reason},
        )
        raise CredentialRefusedError(reason)

    def refuse(
        self, principal: Principal, action: str, reason: str, *, tenant_id: str | None = None
    ) -> None:
        """Write the refusal to this region's ledger, then raise `AccessRefusedError`."""
        self.platform.plane(self.region).ledger.append(
            actor=principal.actor,
            action=REFUSED,
            subject=f"tenant:{tenant_id}" if tenant_id else f"region:{self.region.value}",
            tenant_id=tenant_id,
            details={
                "attempted": action,
                "officer": principal.officer_id,
                "role": principal.role.value,
                "reason": reason,
            },
        )
        raise AccessRefusedError(reason)
