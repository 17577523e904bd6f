"""`Platform`: settings, the control plane and the region data planes, opened on demand."""

from __future__ import annotations

from typing import Any

from atlasrec.control.service import CapAboveMaximumError, ControlPlane, IssuedKey
from atlasrec.control.tables import Tenant
from atlasrec.dataplane.plane import RegionDataPlane
from atlasrec.db import make_engine
from atlasrec.errors import CrossRegionError, UnknownTenantError
from atlasrec.files import private_folder
from atlasrec.settings import Settings, get_settings
from atlasrec.tenancy import Region, Scope, SharingPolicy
from audit.ledger import AuditLedger

Plane = RegionDataPlane[AuditLedger]
"""A region data plane as the platform opens it: audited by the hash-chained ledger."""


class Platform:
    """Entry point of the CLI, the demo and the services."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        for folder in {self.settings.home, self.settings.offline_root()}:
            private_folder(folder)  # databases, secrets and data: the owner's only
        self.secret = self.settings.secret_key.get_secret_value().encode()
        self.control = ControlPlane(
            make_engine(self.settings.control_url()),
            self.secret,
            max_epsilon_cap=self.settings.max_epsilon_cap,
        )
        self.control.migrate()
        self._planes: dict[Region, Plane] = {}

    def plane(self, region: Region) -> Plane:
        """A region's data plane (migrated on first use).

        A process pinned to a region (`ATLASREC_REGION`) cannot open another region's plane.
        """
        pinned = self.settings.region
        if pinned is not None and region != pinned:
            raise CrossRegionError(
                f"this process runs in region {pinned.value!r} and cannot open region "
                f"{region.value!r}'s data plane"
            )
        if region not in self._planes:
            plane = Plane(
                region,
                self.settings,
                self.control,
                lambda engine: AuditLedger(region, engine, anchor=self.control),
            )
            plane.migrate()
            self._planes[region] = plane
        return self._planes[region]

    def scope(self, tenant_id: str) -> Scope:
        """The scope a request for `tenant_id` runs under in this process.

        In embedded mode that is the tenant's home region; a process pinned to a region
        scopes every request to its own region, so a foreign tenant is refused at the
        boundary (and the refusal lands in this region's ledger).
        """
        home = self.control.home_region_of(tenant_id)
        if home is None:
            raise UnknownTenantError(tenant_id)
        return Scope(tenant_id, self.settings.region or home)

    def create_tenant(
        self,
        tenant_id: str,
        *,
        region: Region,
        sharing: SharingPolicy,
        actor: str,
        **options: Any,
    ) -> tuple[Tenant, IssuedKey]:
        """Register a tenant and record it in its home region's ledger."""
        plane = self.plane(region)
        try:
            tenant, issued = self.control.create_tenant(
                tenant_id, region=region, sharing=sharing, **options
            )
        except CapAboveMaximumError as exc:  # a refused budget is audited, as every one is
            plane.ledger.append(
                actor=actor,
                action="budget.cap_refused",
                subject=f"tenant:{tenant_id}",
                details={"reason": str(exc), "attempted": "tenant.create"},
            )
            raise
        plane.ledger.append(
            actor=actor,
            action="tenant.created",
            subject=f"tenant:{tenant_id}",
            tenant_id=tenant_id,
            details={
                "sharing": sharing.value,
                "epsilon_cap": tenant.epsilon_cap,
                "delta": tenant.delta,
                "api_key_id": issued.key_id,
            },
        )
        return tenant, issued

    def close(self) -> None:
        """Release database connections."""
        for plane in self._planes.values():
            plane.dispose()
        self.control.engine.dispose()
