"""`atlasrec monitor`: a region's tenants (freshness, drift, audits, budget); drift checks."""

from __future__ import annotations

import logging
from typing import Any

from atlasrec.dataplane.dp_runs import DpRunTable, budget_state
from atlasrec.drift import DriftReport, check_drift, latest_drift
from atlasrec.errors import AtlasRecError
from atlasrec.freshness import TenantFreshness, region_freshness
from atlasrec.leakage import federation_stopped, leakage_hits
from atlasrec.platform import Platform
from atlasrec.privacy_audit import audit_alarms
from atlasrec.tenancy import Region, Scope

BUDGET_LOW = 0.1
"""A tenant with less than this share of its epsilon cap left is flagged `budget_low`."""
log = logging.getLogger("atlasrec.monitor")


def monitor_status(platform: Platform, region: Region, *, actor: str) -> dict[str, Any]:
    """Every tenant of `region`: freshness against its SLOs, drift, DP budget, and flags."""
    plane = platform.plane(region)
    drift = latest_drift(platform, region)
    alarms = audit_alarms(platform, region)
    hits = leakage_hits(platform, region)
    tenants = []
    for freshness in region_freshness(platform, region):
        tenant = platform.control.get_tenant(freshness.tenant_id)
        scope = Scope(tenant.id, region)
        with plane.session(scope, actor=actor, action="monitor.status") as session:
            runs = DpRunTable(session, plane.ledger).runs()
        state = budget_state(runs, cap=tenant.epsilon_cap, delta=tenant.delta)
        report = drift.get(tenant.id)
        flags = _flags(freshness, report, bool(hits.get(tenant.id)), alarms.get(tenant.id))
        if state.remaining <= 0:
            flags.append("budget_exhausted")
        elif state.remaining < BUDGET_LOW * tenant.epsilon_cap:
            flags.append("budget_low")
        budget = {"cap": tenant.epsilon_cap, "spent": state.spent, "remaining": state.remaining}
        summary = {"drift": _drift_summary(report), "budget": budget, "flags": flags}
        tenants.append({**freshness.as_json(), **summary})
    lags = {name: lag.total for name, lag in plane.events.lags().items()}
    stopped = federation_stopped(platform, region)
    return {
        "region": region.value,
        "consumers": lags,
        "federation_stopped": stopped,
        "tenants": tenants,
    }


def _flags(
    freshness: TenantFreshness, drift: DriftReport | None, leaked: bool, alarm: bool | None
) -> list[str]:
    """Stale signals, drift of the live model, leakage findings, a privacy audit alarm."""
    flags = [f"{signal}_stale" for signal in freshness.breached]
    if drift is not None and drift.model_version == freshness.model_version:
        flags += [f"drift_{signal}" for signal in drift.drifted]
    if leaked:
        flags.append("leakage")
    if alarm:
        flags.append("privacy_audit_alarm")
    return flags


def check_region_drift(platform: Platform, region: Region, *, actor: str) -> list[DriftReport]:
    """A recorded drift check of every tenant of `region` with a model (a failure is logged)."""
    reports = []
    for tenant in platform.control.list_tenants(region):
        try:
            reports.append(check_drift(platform, tenant.id, actor=actor))
        except AtlasRecError as exc:
            log.warning("drift check of %s failed: %s", tenant.id, exc)
    return reports


def _drift_summary(report: DriftReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "checked_at": report.checked_at,
        "model_version": report.model_version,
        "drifted": report.drifted,
    }
