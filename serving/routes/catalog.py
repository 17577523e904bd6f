"""PUT /v1/catalog/items: upsert items, recommendable as soon as the call returns (200).

While the region database cannot be reached, the upsert is kept in the region's log and
applied once it is back (`atlasrec.deferred_catalog`): 202 with `pending: true`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from atlasrec.catalog import PolicyAttributeError, parse_policy
from atlasrec.clock import utcnow
from atlasrec.dataplane.embeddings import embedded_items
from atlasrec.dataplane.repository import TenantData
from atlasrec.deferred_catalog import defer
from atlasrec.http_errors import DATABASE_DOWN
from serving import schemas
from serving.deps import Auth, RequestIdDep, ServingApp, ServingDep
from serving.runtime import ACTOR, TenantRuntime, catalog_items

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])


@router.put(
    "/items",
    response_model=schemas.CatalogResponse,
    responses={202: {"model": schemas.CatalogResponse, "description": "kept, not yet applied"}},
)
def catalog(
    body: schemas.CatalogRequest,
    serving: ServingDep,
    request_id: RequestIdDep,
    runtime: Auth,
    response: Response,
) -> schemas.CatalogResponse:
    """Insert or update items; recommendable as soon as this returns (200).

    While the region database is down: kept, applied when it is back (202, `pending`).
    """
    rows = _item_rows(body, runtime.scope.tenant_id)
    try:
        _store(serving, runtime, rows, request_id)
    except DATABASE_DOWN:
        defer(serving.plane, runtime.scope, request_id, list(rows.values()))
        serving.metrics.requests.labels(runtime.scope.tenant_id, "catalog", "202").inc()
        response.status_code = 202
        return schemas.CatalogResponse(
            request_id=request_id,
            upserted=len(rows),
            model_version=runtime.state.model_version,
            pending=True,
        )
    embedded = embedded_items(serving.plane, runtime.scope, actor=ACTOR, item_ids=list(rows))
    runtime.apply_items(catalog_items(embedded))
    serving.metrics.requests.labels(runtime.scope.tenant_id, "catalog", "200").inc()
    return schemas.CatalogResponse(
        request_id=request_id,
        upserted=len(rows),
        model_version=runtime.state.model_version,
    )


def _item_rows(body: schemas.CatalogRequest, tenant_id: str) -> dict[str, dict[str, Any]]:
    """The items' rows by id (the last of a repeated id wins); 422 on a bad policy."""
    rows: dict[str, dict[str, Any]] = {}
    for n, item in enumerate(body.items):
        try:
            parse_policy(item.attributes)
        except PolicyAttributeError as exc:
            raise HTTPException(
                422, f"tenant {tenant_id!r}: items[{n}] ({item.item_id!r}): {exc}"
            ) from None
        rows[item.item_id] = {
            "item_id": item.item_id,
            "title": item.title,
            "category": item.category or None,
            "description": item.description or None,
            "attributes": item.attributes,
            "updated_at": utcnow(),
        }
    return rows


def _store(
    serving: ServingApp, runtime: TenantRuntime, rows: dict[str, dict[str, Any]], request_id: str
) -> None:
    """Upsert the rows and record the change in the region's ledger, in one transaction."""
    scope = runtime.scope
    with serving.plane.session(scope, actor=ACTOR, action="catalog.upsert") as session:
        TenantData(session).upsert_items(list(rows.values()))
        serving.plane.ledger.append(
            actor=f"api-key:{scope.tenant_id}",
            action="catalog.upserted",
            subject=f"tenant:{scope.tenant_id}",
            tenant_id=scope.tenant_id,
            session=session,
            details={"items": len(rows), "request_id": request_id},
        )
