"""The served-request log's writer: served requests' records from the log to the region DB.

The `requests` consumer of the region's log hands each tenant's batch of `ServedRecord`s to
`requests_sink`. One transaction inserts the rows not yet stored (`request_id` is the
table's primary key: a row already there is skipped) and one ledger record of what it
inserted, carrying the batch's digest; the consumer acknowledges only after the commit. A
redelivered batch therefore writes nothing twice, neither rows nor ledger records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from atlasrec.consumers import Sink
from atlasrec.dataplane.session import TenantSession
from atlasrec.dataplane.tables import ServedRequest
from atlasrec.eventlog.records import Delivery, ServedRecord
from atlasrec.platform import Plane
from atlasrec.tenancy import Scope

ACTOR = "serving"
ACTION = "serving.requests"


def requests_sink(plane: Plane) -> Sink[ServedRecord]:
    """Write deliveries of served records to the region DB (a stored request is skipped)."""

    def write(scope: Scope, deliveries: Sequence[Delivery[ServedRecord]]) -> None:
        write_served(plane, scope, [d.event for d in deliveries])

    return write


def write_served(plane: Plane, scope: Scope, records: Sequence[ServedRecord]) -> int:
    """Store the records' rows not stored yet, and their ledger record; how many were new."""
    with plane.session(scope, actor=ACTOR, action="serving.record") as session:
        inserted = _insert_new(session, scope, records)
        new = [r for r in records if r.request_id in inserted]
        if new:
            plane.ledger.append(
                actor=ACTOR,
                action=ACTION,
                subject=f"tenant:{scope.tenant_id}",
                tenant_id=scope.tenant_id,
                session=session,
                details=batch_details(new),
            )
    return len(new)


def _insert_new(session: TenantSession, scope: Scope, records: Sequence[ServedRecord]) -> set[str]:
    """INSERT ... ON CONFLICT DO NOTHING; the request ids actually inserted."""
    if not records:
        return set()
    table: Any = ServedRequest.__table__  # type: ignore[attr-defined]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(table)
        .on_conflict_do_nothing(index_elements=["request_id"])
        .returning(table.c.request_id)
    )
    rows = [{**r.row(), "tenant_id": scope.tenant_id} for r in records]
    return set(session.execute(statement, rows).scalars())


def batch_details(records: Sequence[ServedRecord]) -> dict[str, Any]:
    """The ledger record's details of a stored batch: its size, ends and digest."""
    digest = hashlib.sha256(
        json.dumps([[r.request_id, r.model_version, list(r.items)] for r in records]).encode()
    ).hexdigest()
    return {
        "count": len(records),
        "first_request_id": records[0].request_id,
        "last_request_id": records[-1].request_id,
        "sha256": digest,
    }
