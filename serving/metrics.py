"""Prometheus metrics of the serving app (one registry per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
            "Refused requests by reason (unauthenticated, wrong region).",
            ["reason"],
            registry=self.registry,
        )
        self.model_swaps = Gauge(
            "atlasrec_model_swaps",
            "Model versions swapped in since start.",
            registry=self.registry,
        )
