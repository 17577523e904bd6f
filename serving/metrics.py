"""Prometheus metrics of the serving app (one registry per app).

With several worker processes (`atlasrec serve --workers N`), `PROMETHEUS_MULTIPROC_DIR` is
set and /metrics aggregates every worker's values (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.18, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Request counts per tenant, per-stage latency histograms, degraded responses."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "atlasrec_requests",
            "Requests by tenant, endpoint and status code.",
            ["tenant", "endpoint", "status"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "atlasrec_stage_seconds",
            "Time spent per serving stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.degraded = Counter(
            "atlasrec_degraded",
            "Degraded responses by tenant and stage.",
            ["tenant", "stage"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "atlasrec_refusals",
            "Refused requests by reason (unauthenticated, wrong region, operator).",
            ["reason"],
            registry=self.registry,
        )
        self.arm_requests = Counter(
            "atlasrec_arm_requests",
            "Recommendations answered by tenant and arm (live, or a release's canary).",
            ["tenant", "arm"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "atlasrec_shadow",
            "Shadow scorings of a release in flight by tenant: scored, error, dropped.",
            ["tenant", "outcome"],
            registry=self.registry,
        )
        self.shadow_seconds = Histogram(
            "atlasrec_shadow_seconds",
            "Serving time of the candidate on shadowed requests.",
            ["tenant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shadow_overlap = Histogram(
            "atlasrec_shadow_overlap",
            "Share of the live top-k the candidate also ranked in its top-k.",
            ["tenant"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=self.registry,
        )
        self.shadow_violations = Counter(
            "atlasrec_shadow_policy_violations",
            "Items a candidate ranked that the request's policy forbids (must stay 0).",
            ["tenant"],
            registry=self.registry,
        )
        self.model_swaps = Gauge(
            "atlasrec_model_swaps",
            "Model versions swapped in since start (per worker process).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.request_log = Gauge(
            "atlasrec_request_log",
            "Served requests' records: logged, held back (log down), dropped; failed appends.",
            ["state"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )

        self.freshness_age = Gauge(
            "atlasrec_freshness_age_seconds",
            "Age of each tenant's model, feature lag, backbone age, time since federation.",
            ["tenant", "signal"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.freshness_slo = Gauge(
            "atlasrec_freshness_slo_seconds",
            "Each tenant's freshness SLO per signal (model, features, backbone, federation).",
            ["tenant", "signal"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.retrain_refused = Gauge(
            "atlasrec_retrain_refused",
            "1 while a tenant's stale model could not be retrained (budget, or the run refused).",
            ["tenant"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.drift = Gauge(
            "atlasrec_drift_detected",
            "1 while the last drift check of a tenant's live model found drift in a signal.",
            ["tenant", "signal"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.drift_value = Gauge(
            "atlasrec_drift_value",
            "The last drift check's effect size per signal (JS, normed Wasserstein or AUC).",
            ["tenant", "signal"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.privacy_audit_alarm = Gauge(
            "atlasrec_privacy_audit_alarm",
            "1 while a tenant's last empirical privacy audit bounded epsilon above its claim.",
            ["tenant"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.leakage_hits = Gauge(
            "atlasrec_leakage_hits",
            "Leakage findings per tenant (a canary where it must not be; `-`: a backbone).",
            ["tenant"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.federation_stopped = Gauge(
            "atlasrec_federation_stopped",
            "1 while a leakage finding keeps the region's federation stopped.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.release_rolled_back = Gauge(
            "atlasrec_release_rolled_back",
            "1 while a tenant's newest release decision is a rollback (until another starts).",
            ["tenant"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.release_in_flight = Gauge(
            "atlasrec_release_in_flight_seconds",
            "Seconds since a tenant's release in flight started (0: none in flight).",
            ["tenant"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.experiment_invalid = Gauge(
            "atlasrec_experiment_invalid",
            "1 while a tenant's newest experiment ended invalid (sample ratio mismatch).",
            ["tenant"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.online_store_up = Gauge(
            "atlasrec_online_store_up",
            "1 while the online store (Redis) answers, 0 while its circuit breaker is open.",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.consumer_lag = Gauge(
            "atlasrec_consumer_lag_events",
            "Records each durable consumer of the region's log has still to finish.",
            ["consumer"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )

    def observe_shadow(
        self, tenant: str, outcome: str, seconds: float, overlap: float, violations: int
    ) -> None:
        """Count one shadow scoring (`serving.arms.ShadowScorer`)."""
        self.shadow.labels(tenant, outcome).inc()
        if outcome == "scored":
            self.shadow_seconds.labels(tenant).observe(seconds)
            self.shadow_overlap.labels(tenant).observe(overlap)
            self.shadow_violations.labels(tenant).inc(violations)

    def render(self) -> bytes:
        """The exposition text: this process's registry, or every worker's in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
