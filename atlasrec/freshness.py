"""How fresh each tenant's model, features, backbone and federation are, against its SLOs.

Four signals per tenant of a region, each an age in seconds checked against the tenant's
SLO (`Settings.freshness_slo`):

- `model`: since the tenant's live model version was trained (its version's timestamp);
- `features`: while the region's online consumer has events still to apply, since the
  newest event applied to the tenant's online features (0 when nothing waits);
- `backbone`: since the backbone the tenant trains from was published (`regional` and
  `global` tenants; the cross-region tier's for a `global` tenant without a regional one);
- `federation`: since the region's last completed federation run (`regional`, `global`).

A signal with nothing to measure (no model yet, a `solo` tenant's backbone) has age None
and is never breached. Everything is read inside the region: its artifacts, online store,
event log and database.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlmodel import Session, col, select

from atlasrec.artifacts import VERSION
from atlasrec.control.tables import Tenant
from atlasrec.dataplane.tables import FederationRun
from atlasrec.federation.store import BackboneStore, global_store, region_store
from atlasrec.models.bundle import KIND as MODEL_KIND
from atlasrec.platform import Platform
from atlasrec.settings import FRESHNESS_SIGNALS
from atlasrec.tenancy import Region, Scope, SharingPolicy

ACTOR = "monitor"
ONLINE_CONSUMER = "online"


@dataclass(frozen=True)
class Signal:
    """One freshness signal of a tenant: its age and SLO in seconds."""

    age_s: float | None
    slo_s: float

    @property
    def breached(self) -> bool:
        """Whether the age is past the SLO."""
        return self.age_s is not None and self.age_s > self.slo_s


@dataclass(frozen=True)
class TenantFreshness:
    """Every freshness signal of one tenant."""

    tenant_id: str
    region: str
    sharing: str
    model_version: str | None
    signals: dict[str, Signal]

    @property
    def breached(self) -> list[str]:
        """The signals past their SLO."""
        return [name for name, signal in self.signals.items() if signal.breached]

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view, with each signal's breach flag."""
        return {
            "tenant_id": self.tenant_id,
            "region": self.region,
            "sharing": self.sharing,
            "model_version": self.model_version,
            "signals": {
                name: {**asdict(signal), "breached": signal.breached}
                for name, signal in self.signals.items()
            },
            "breached": self.breached,
        }


@lru_cache(maxsize=4096)
def version_time(version: str) -> float | None:
    """The publication time (epoch seconds) in an artifact version's name, None if not one."""
    if not VERSION.fullmatch(version):
        return None  # e.g. "content-embeddings": a tenant served before its first model
    stamp = datetime.strptime(version[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    return stamp.timestamp()


def age_of_version(version: str | None, now: float) -> float | None:
    """Seconds since a version was published, or None without one."""
    published = None if version is None else version_time(version)
    return None if published is None else max(0.0, now - published)


def region_freshness(
    platform: Platform, region: Region, *, now: float | None = None
) -> list[TenantFreshness]:
    """Every tenant homed in `region`, with its freshness signals."""
    now = time.time() if now is None else now
    plane = platform.plane(region)
    backlog = plane.events.lags().get(ONLINE_CONSUMER)
    waiting = backlog is not None and backlog.total > 0
    regional, cross = region_store(platform.settings, region), global_store(platform.settings)
    federated = _last_federation(platform, region)
    return [
        _tenant(platform, tenant, now, waiting, _backbone(tenant, regional, cross), federated)
        for tenant in platform.control.list_tenants(region)
    ]


def _tenant(
    platform: Platform,
    tenant: Tenant,
    now: float,
    waiting: bool,
    backbone: str | None,
    federated: float | None,
) -> TenantFreshness:
    scope = Scope(tenant.id, Region(tenant.home_region))
    plane = platform.plane(scope.region)
    model = plane.artifacts.latest(scope, MODEL_KIND, actor=ACTOR)
    version = model.version if model is not None else None
    features = 0.0
    if waiting:
        newest = plane.online.scoped(scope, actor=ACTOR).last_event_at()
        features = max(0.0, now - newest) if newest is not None else 0.0
    shares = SharingPolicy(tenant.sharing) is not SharingPolicy.SOLO
    ages = {
        "model": age_of_version(version, now),
        "features": features,
        "backbone": age_of_version(backbone, now) if shares else None,
        "federation": (now - federated if federated is not None else None) if shares else None,
    }
    slo = platform.settings.freshness_slo
    return TenantFreshness(
        tenant.id,
        scope.region.value,
        tenant.sharing,
        version,
        {name: Signal(ages[name], slo(tenant.id, name)) for name in FRESHNESS_SIGNALS},
    )


def _backbone(tenant: Tenant, regional: BackboneStore, cross: BackboneStore) -> str | None:
    """The version of the backbone the tenant trains from (as training picks it)."""
    sharing = SharingPolicy(tenant.sharing)
    latest = regional.latest() if sharing is not SharingPolicy.SOLO else None
    if latest is None and sharing is SharingPolicy.GLOBAL:
        latest = cross.latest()
    return latest.version if latest is not None else None


def _last_federation(platform: Platform, region: Region) -> float | None:
    """When the region's last completed federation run finished (epoch seconds), or None."""
    with Session(platform.plane(region).engine) as session:
        finished = session.exec(
            select(FederationRun.updated_at)
            .where(col(FederationRun.status) == "completed")
            .order_by(col(FederationRun.updated_at).desc())
            .limit(1)
        ).first()
    return None if finished is None else finished.replace(tzinfo=UTC).timestamp()
