"""Drift of a tenant's traffic since its model's training snapshot, checked inside its region.

The training snapshot is the tenant's interactions up to the model's `data_until` (its
lineage's newest training timestamp; for a model trained before lineage recorded it, its
publication time). The traffic since is what the offline store holds after it (at most
`SAMPLE_CAP` of its oldest and of its newest rows are read). The
signals and their tests are `atlasrec.evaluation.drift_signals`. Each check is a ledger
record (`monitor.drift_checked`, the report's figures: no user data), which /metrics, the
officer UI and `atlasrec monitor status` read back; a drifted tenant is a retrain
candidate (`atlasrec.pipelines.retrain`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from sqlmodel import select

from atlasrec.artifacts import Artifact
from atlasrec.dataplane.tables import Item
from atlasrec.errors import AtlasRecError
from atlasrec.evaluation.drift import SignalDrift
from atlasrec.evaluation.drift_signals import (
    POPULARITY_BUCKETS,
    BundleEncoder,
    Window,
    drift_signals,
    split_samples,
)
from atlasrec.freshness import version_time
from atlasrec.models.bundle import KIND as MODEL_KIND
from atlasrec.models.bundle import ModelBundle
from atlasrec.offline_store import TenantOffline
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope

CHECKED = "monitor.drift_checked"


class ModelUnreadableError(AtlasRecError):
    """The tenant's published model cannot be loaded: nothing can be said about its drift."""


SAMPLE_CAP = 20_000
"""At most this many interactions in the reference and in the current sample."""


@dataclass(frozen=True)
class DriftReport:
    """One tenant's drift check: the model it was against and every signal's verdict."""

    tenant_id: str
    region: str
    model_version: str | None
    data_until: float | None
    checked_at: str
    signals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        """The signals that drifted."""
        return [s["signal"] for s in self.signals if s["status"] == "drift"]

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view, with the drifted signals."""
        return {
            "tenant_id": self.tenant_id,
            "region": self.region,
            "model_version": self.model_version,
            "data_until": self.data_until,
            "checked_at": self.checked_at,
            "signals": self.signals,
            "drifted": self.drifted,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DriftReport:
        """Inverse of `as_json` (the ledger's copy)."""
        return cls(
            data["tenant_id"],
            data["region"],
            data["model_version"],
            data["data_until"],
            data["checked_at"],
            list(data["signals"]),
        )


def tenant_drift(platform: Platform, tenant_id: str, *, actor: str) -> DriftReport:
    """Compare the tenant's traffic since its model's training snapshot with the snapshot."""
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    artifact = plane.artifacts.latest(scope, MODEL_KIND, actor=actor)
    checked_at = datetime.now(UTC).isoformat()
    if artifact is None:  # no model: no training snapshot to compare with
        return DriftReport(tenant_id, scope.region.value, None, None, checked_at)
    bundle = _load(artifact)
    until = _data_until(artifact.version, bundle.lineage)
    offline = plane.offline.scoped(scope, actor=actor)
    training = _window(offline, ds.field("ts") <= until, SAMPLE_CAP * (POPULARITY_BUCKETS + 1))
    after = ds.field("ts") > until
    first = _window(offline, after, SAMPLE_CAP, newest=False)
    samples = split_samples(training, first, _window(offline, after, SAMPLE_CAP), cap=SAMPLE_CAP)
    signals = drift_signals(samples, _categories(platform, scope, actor), BundleEncoder(bundle))
    return DriftReport(
        tenant_id,
        scope.region.value,
        artifact.version,
        until,
        checked_at,
        [_rounded(s) for s in signals],
    )


def check_drift(platform: Platform, tenant_id: str, *, actor: str) -> DriftReport:
    """`tenant_drift`, recorded in the region's ledger (where there is a model to check)."""
    report = tenant_drift(platform, tenant_id, actor=actor)
    if report.model_version is None:
        return report
    platform.plane(Region(report.region)).ledger.append(
        actor=actor,
        action=CHECKED,
        subject=f"tenant:{tenant_id}",
        tenant_id=tenant_id,
        details=report.as_json(),
    )
    return report


def latest_drift(platform: Platform, region: Region) -> dict[str, DriftReport]:
    """Each tenant's last recorded drift check in `region`."""
    records = platform.plane(region).ledger.latest_by_tenant(CHECKED)
    return {t: DriftReport.from_json(json.loads(r.details)) for t, r in records.items()}


def drift_history(platform: Platform, tenant_id: str, *, limit: int = 20) -> list[DriftReport]:
    """The tenant's last `limit` recorded drift checks, newest first."""
    scope = platform.scope(tenant_id)
    ledger = platform.plane(scope.region).ledger
    records = ledger.records(tenant_id=tenant_id, action=CHECKED, limit=None)[-limit:]
    return [DriftReport.from_json(json.loads(r.details)) for r in reversed(records)]


def _load(artifact: Artifact) -> ModelBundle:
    """The published model, or a `ModelUnreadableError` naming it (never a partial check)."""
    try:
        return ModelBundle.load(artifact)
    except Exception as exc:  # any reader's failure: torch, numpy, JSON, a missing file
        raise ModelUnreadableError(
            f"tenant {artifact.tenant_id!r}: model {artifact.version} cannot be read, so its "
            f"drift is unverified: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        ) from exc


def _data_until(version: str, lineage: dict[str, Any]) -> float:
    """The newest training timestamp (epoch s): the lineage's, else the publication time."""
    until = lineage.get("data_until")
    if until is not None:
        return float(until)
    published = version_time(version)
    return published if published is not None else time.time()


def _window(
    offline: TenantOffline, where: ds.Expression, limit: int, *, newest: bool = True
) -> Window:
    """The newest (or oldest) `limit` interactions matching `where`, oldest first."""
    table = offline.read_table(["user_key", "item_id", "ts", "seq"], where=where)
    if table.num_rows > limit:
        order = "descending" if newest else "ascending"
        kept = pc.select_k_unstable(table, limit, sort_keys=[("ts", order), ("seq", order)])
        table = table.take(kept)
    table = table.sort_by([("ts", "ascending"), ("seq", "ascending")])
    return Window(_strings(table["user_key"]), _strings(table["item_id"]))


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.string()).to_pylist(), dtype=object)


def _categories(platform: Platform, scope: Scope, actor: str) -> dict[str, str | None]:
    plane = platform.plane(scope.region)
    with plane.session(scope, actor=actor, action="monitor.drift") as session:
        return {i: c for i, c in session.execute(select(Item.item_id, Item.category))}


def _rounded(signal: SignalDrift) -> dict[str, Any]:
    data = signal.as_json()
    for name in ("value", "p_value"):
        if data[name] is not None:
            data[name] = float(f"{data[name]:.6g}")
    return data
