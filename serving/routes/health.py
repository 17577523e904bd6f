"""GET /healthz (liveness, what is served) and GET /metrics (Prometheus)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.deps import ServingDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(serving: ServingDep) -> dict[str, Any]:
    """Liveness, and what the process is serving from."""
    return {
        "status": "ok",
        "region": serving.region.value,
        "tenants": {r.scope.tenant_id: r.state.model_version for r in serving.runtime.loaded()},
        "online_store": "unreachable" if serving.runtime.breaker.open else "ok",
        "queued_records_written": serving.request_log.stats.logged,
        "request_log": asdict(serving.request_log.stats),
    }


@router.get("/metrics")
def metrics(serving: ServingDep) -> Response:
    """Prometheus metrics."""
    serving.metrics.model_swaps.set(serving.runtime.swaps)
    for state, value in asdict(serving.request_log.stats).items():
        serving.metrics.request_log.labels(state).set(value)
    return Response(serving.metrics.render(), media_type=CONTENT_TYPE_LATEST)
