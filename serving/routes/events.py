"""POST /v1/events: appended to the region's event log, then acknowledged (202).

The answer comes only once the events are durable in the log, so an acknowledged event is
never lost; when the log cannot confirm, the answer is 503 and nothing is acknowledged.
The user's online features change at once (applied by sequence number, so the online
consumer's later pass over the same events changes nothing); the offline store is written
by its consumer.
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, HTTPException

from atlasrec.event_types import tenant_types
from atlasrec.eventlog.records import LogEvent
from serving import schemas
from serving.deps import Auth, RequestIdDep, ServingApp, ServingDep, check_known_items
from serving.runtime import TenantRuntime

ACTOR = "serving"
MAX_FUTURE_S = 86_400.0
"""An event may be at most one day ahead of the server's clock."""
MAX_AGE_S = 5 * 365 * 86_400.0
"""... and at most five years old (older history is loaded with `atlasrec ingest`)."""

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post("", status_code=202, response_model=schemas.EventsResponse)
def events(
    body: schemas.EventsRequest, serving: ServingDep, request_id: RequestIdDep, runtime: Auth
) -> schemas.EventsResponse:
    """Append interactions to the region's event log; the user's features change at once."""
    check_known_items(runtime, [e.item_id for e in body.events], "events[{n}].item_id")
    _check_served(serving, runtime, body.events)
    logged = _logged(runtime, body.events, time.time())
    appended = serving.plane.events.append(runtime.scope, logged, actor=ACTOR)
    new = [
        (e.feature(), seq)
        for e, seq, dup in zip(logged, appended.seqs, appended.duplicate, strict=True)
        if not dup
    ]
    log_id = serving.plane.events.log_id
    online = runtime.online.record([f for f, _ in new], [seq for _, seq in new], log_id)
    serving.metrics.requests.labels(runtime.scope.tenant_id, "events", "202").inc()
    return schemas.EventsResponse(
        request_id=request_id,
        accepted=appended.accepted,
        duplicates=appended.duplicates,
        online=online,
    )


def _check_served(serving: ServingApp, runtime: TenantRuntime, events: list[schemas.Event]) -> None:
    """Refuse the whole batch (403, audited) if an event names a request not served to its tenant.

    Checked before anything is appended, so a refused batch leaves nothing behind.
    """
    for n, e in enumerate(events):
        if e.request_id is not None:
            serving.plane.boundary.admit_request_ref(
                runtime.scope,
                e.request_id,
                actor=ACTOR,
                action="events.attribute",
                field=f"events[{n}].request_id",
            )
        elif e.position is not None:
            raise HTTPException(
                422,
                f"tenant {runtime.scope.tenant_id!r}: events[{n}].position: given without the "
                "request_id of the recommendation it is a position in",
            )


def _logged(runtime: TenantRuntime, events: list[schemas.Event], now: float) -> list[LogEvent]:
    """The log's records: pseudonymised users, event ids, known types, timestamps in the window."""
    types = tenant_types(runtime.tenant.event_types)
    logged = []
    for n, e in enumerate(events):
        if e.event not in types:
            raise HTTPException(
                422,
                f"tenant {runtime.scope.tenant_id!r}: events[{n}].event: {e.event!r} is not an "
                f"event type of this tenant (accepted: {', '.join(sorted(types))}; a tenant adds "
                "its own with `atlasrec tenants event-types`)",
            )
        ts = now if e.timestamp is None else e.timestamp
        if not now - MAX_AGE_S <= ts <= now + MAX_FUTURE_S:
            raise HTTPException(
                422,
                f"tenant {runtime.scope.tenant_id!r}: events[{n}].timestamp: {e.timestamp} is "
                "outside the accepted window (at most 5 years old and 1 day ahead of the "
                "server's clock; load older history with `atlasrec ingest`)",
            )
        logged.append(
            LogEvent(
                event_id=e.event_id or uuid.uuid4().hex,
                user_key=runtime.pseudonymise(e.user_id),
                item_id=e.item_id,
                ts=int(ts),
                event=e.event,
                weight=types[e.event] if e.weight is None else e.weight,
                request_id=e.request_id,
                position=e.position,
            )
        )
    return logged
