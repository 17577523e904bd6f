"""What /metrics reads at scrape time.

The request log, the online store, the consumers' lag, and every tenant's freshness
(`atlasrec.freshness`), last drift check (`atlasrec.drift`), last privacy audit, leakage
findings (`atlasrec.leakage`) and release signals (`atlasrec.release_signals`), these
recomputed at most every `FRESHNESS_EVERY_S` (a failure to read them keeps the last values
and is logged).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from atlasrec.drift import DriftReport, latest_drift
from atlasrec.freshness import region_freshness
from atlasrec.leakage import federation_stopped, leakage_hits
from atlasrec.pipelines.retrain import refused_retrains
from atlasrec.privacy_audit import audit_alarms
from atlasrec.release_signals import ReleaseSignal, invalid_experiments, release_signals
from serving.deps import ServingApp
from serving.metrics import Metrics

FRESHNESS_EVERY_S = 15.0
log = logging.getLogger("atlasrec.serving")


def observe(serving: ServingApp) -> None:
    """Set the gauges that describe the process and its region now."""
    metrics = serving.metrics
    metrics.model_swaps.set(serving.runtime.swaps)
    for state, value in asdict(serving.request_log.stats).items():
        metrics.request_log.labels(state).set(value)
    metrics.online_store_up.set(0 if serving.runtime.breaker.open else 1)
    if time.monotonic() - serving.freshness_read_at < FRESHNESS_EVERY_S:
        return
    serving.freshness_read_at = time.monotonic()
    try:
        for name, lag in serving.plane.events.lags().items():
            metrics.consumer_lag.labels(name).set(lag.total)
        tenants = region_freshness(serving.platform, serving.region)
        refused = refused_retrains(serving.platform, serving.region)
        drift = latest_drift(serving.platform, serving.region)
        alarms = audit_alarms(serving.platform, serving.region)
        hits = leakage_hits(serving.platform, serving.region)
        stopped = federation_stopped(serving.platform, serving.region)
        releases = release_signals(serving.platform, serving.region)
        invalid = invalid_experiments(serving.platform, serving.region)
    except Exception:
        log.exception("metrics: could not read the region's freshness")
        return
    metrics.federation_stopped.set(1 if stopped else 0)
    _releases(metrics, releases, invalid)
    for tenant_id, count in hits.items():
        metrics.leakage_hits.labels(tenant_id or "-").set(count)
    for tenant in tenants:
        standing = refused.get(tenant.tenant_id, "") == tenant.model_version
        metrics.retrain_refused.labels(tenant.tenant_id).set(1 if standing else 0)
        _drift(metrics, tenant.model_version, drift.get(tenant.tenant_id))
        if tenant.tenant_id in alarms:
            metrics.privacy_audit_alarm.labels(tenant.tenant_id).set(alarms[tenant.tenant_id])
        for signal, value in tenant.signals.items():
            labels = (tenant.tenant_id, signal)
            metrics.freshness_slo.labels(*labels).set(value.slo_s)
            if value.age_s is not None:  # nothing to measure: no series (never an alert)
                metrics.freshness_age.labels(*labels).set(value.age_s)


def _drift(metrics: Metrics, live: str | None, report: DriftReport | None) -> None:
    """The last drift check's verdicts; 0 once the model it checked is replaced."""
    if report is None:
        return
    for signal in report.signals:
        labels = (report.tenant_id, signal["signal"])
        drifted = signal["status"] == "drift" and report.model_version == live
        metrics.drift.labels(*labels).set(1 if drifted else 0)
        if signal["value"] is not None:
            metrics.drift_value.labels(*labels).set(signal["value"])


def _releases(
    metrics: Metrics, releases: dict[str, ReleaseSignal], invalid: dict[str, bool]
) -> None:
    """Standing rollbacks, releases' time in flight, and invalid experiments."""
    for tenant_id, signal in releases.items():
        metrics.release_rolled_back.labels(tenant_id).set(1 if signal.rolled_back else 0)
        metrics.release_in_flight.labels(tenant_id).set(signal.in_flight_s or 0.0)
    for tenant_id, standing in invalid.items():
        metrics.experiment_invalid.labels(tenant_id).set(1 if standing else 0)
