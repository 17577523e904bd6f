"""POST /v1/events: interactions; the user's online features change at once."""

from __future__ import annotations

import time

from fastapi import APIRouter

from serving import schemas
from serving.deps import Auth, RequestIdDep, ServingDep, check_known_items
from serving.request_log import EventRow

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post("", status_code=202, response_model=schemas.EventsResponse)
def events(
    body: schemas.EventsRequest, serving: ServingDep, request_id: RequestIdDep, runtime: Auth
) -> schemas.EventsResponse:
    """Record interactions: the user's features change at once, the rows are stored."""
    check_known_items(runtime, [e.item_id for e in body.events], "events[{n}].item_id")
    now = time.time()
    rows = [
        EventRow(
            user_key=runtime.pseudonymise(e.user_id),
            item_id=e.item_id,
            ts=int(now if e.timestamp is None else e.timestamp),
            event=e.event,
            weight=e.weight,
        )
        for e in body.events
    ]
    online = runtime.online.record([(r.user_key, r.item_id, r.weight, r.ts) for r in rows])
    serving.request_log.events(runtime.scope, rows)
    serving.metrics.requests.labels(runtime.scope.tenant_id, "events", "202").inc()
    return schemas.EventsResponse(request_id=request_id, accepted=len(rows), online=online)
