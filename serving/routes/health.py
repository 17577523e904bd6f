"""GET /healthz (public liveness), GET /healthz/detail and GET /metrics (operators only).

Liveness says only that the process answers and which region it serves. What it serves
(tenant ids, model versions, request-log counts) and the per-tenant metrics need the ops
token, or a client on the same host (`serving.deps.operator_only`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.deps import OperatorOnly, ServingDep
from serving.gauges import observe

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(serving: ServingDep) -> dict[str, Any]:
    """Liveness (public: no tenant is named)."""
    return {"status": "ok", "region": serving.region.value}


@router.get("/healthz/detail", dependencies=[OperatorOnly])
def healthz_detail(serving: ServingDep) -> dict[str, Any]:
    """What the process is serving from (operators only)."""
    return {
        "status": "ok",
        "region": serving.region.value,
        "tenants": {r.scope.tenant_id: r.state.model_version for r in serving.runtime.loaded()},
        "online_store": "unreachable" if serving.runtime.breaker.open else "ok",
        "request_log": asdict(serving.request_log.stats),
    }


@router.get("/metrics", dependencies=[OperatorOnly])
def metrics(serving: ServingDep) -> Response:
    """Prometheus metrics (operators only)."""
    observe(serving)
    return Response(serving.metrics.render(), media_type=CONTENT_TYPE_LATEST)
