"""Catalog upserts accepted while the region database was down, applied once it is back.

`PUT /v1/catalog/items` writes to the region database in one transaction. When the database
cannot be reached, the route appends the request's validated rows to the region's log
instead (`CatalogRecord`, durable before the 202 answer), and the log's `catalog` consumer
hands them to `catalog_sink` here once the database answers again:
- one transaction per batch; an item is written unless the database holds a write of it
  accepted later (`written_at`): the later write wins, whichever way it came;
- the applied rows get `updated_at` = now, so serving's catalog refresh picks them up, and
  keep `written_at` = when the request was accepted;
- one ledger record per applied request (`catalog.upserted`, `deferred: true`).

A redelivered record finds its items already written at its own time and writes nothing:
nothing is applied or recorded twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from atlasrec.clock import utcnow
from atlasrec.consumers import Sink
from atlasrec.dataplane.repository import TenantData
from atlasrec.eventlog.records import CatalogRecord, Delivery
from atlasrec.platform import Plane
from atlasrec.tenancy import Scope

ACTOR = "consumer"
UPSERTED = "catalog.upserted"


def defer(plane: Plane, scope: Scope, request_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Keep a catalog upsert in the region's log (durable on return; raises if it is down)."""
    items = tuple({k: v for k, v in row.items() if k != "updated_at"} for row in rows)
    record = CatalogRecord(request_id=request_id, accepted_at=utcnow(), items=items)
    plane.events.append(scope, [record], actor=f"api-key:{scope.tenant_id}")


def catalog_sink(plane: Plane) -> Sink[CatalogRecord]:
    """Apply deliveries of deferred catalog upserts to the region DB (a later write wins)."""

    def write(scope: Scope, deliveries: Sequence[Delivery[CatalogRecord]]) -> None:
        apply_deferred(plane, scope, [d.event for d in deliveries])

    return write


def apply_deferred(plane: Plane, scope: Scope, records: Sequence[CatalogRecord]) -> int:
    """Write the records' items not superseded by a later write; how many were written."""
    ids = sorted({str(item["item_id"]) for record in records for item in record.items})
    applied = 0
    with plane.session(scope, actor=ACTOR, action="catalog.apply_deferred") as session:
        data = TenantData(session)
        written = {i: _aware(at) for i, at in data.items_written_at(ids).items()}
        now = utcnow()
        for record in records:
            rows = [
                {**item, "updated_at": now, "written_at": record.accepted_at}
                for item in record.items
                if written.get(item["item_id"], _EPOCH) < record.accepted_at
            ]
            if not rows:
                continue
            data.upsert_items(rows)
            written.update(dict.fromkeys((r["item_id"] for r in rows), record.accepted_at))
            plane.ledger.append(
                actor=f"api-key:{scope.tenant_id}",
                action=UPSERTED,
                subject=f"tenant:{scope.tenant_id}",
                tenant_id=scope.tenant_id,
                session=session,
                details={
                    "items": len(rows),
                    "request_id": record.request_id,
                    "deferred": True,
                    "accepted_at": record.accepted_at.isoformat(),
                    "superseded": len(record.items) - len(rows),
                },
            )
            applied += len(rows)
    return applied


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    """A stored time as aware UTC (SQLite gives naive ones)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
