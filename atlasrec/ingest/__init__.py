"""Ingest of a tenant's catalog and interaction CSV files (the CLI's `ingest` contract).

items.csv:        item_id,title[,category,description,...]   (other columns -> attributes)
interactions.csv: user_id,item_id,timestamp[,event,weight]

Items are validated row by row and upserted into the region database's `items` table; an
item id given twice in one file is refused (a later file updates the item).
Interactions are read and validated a block at a time with pyarrow (`interactions.py`) and
go to the region's offline store as Parquet (tenant and date partitions), staged and
published only once the whole file is valid (`atlasrec.offline_ingest`). A rejected file
leaves nothing behind (the database transaction rolls back, the staged files are deleted),
and the error names the file, line and field. User ids are pseudonymised with the tenant's
key before anything is stored. Re-ingesting the same content is a no-op (the file's hash,
recorded in `ingest_batches`), and rows repeated within or across files are stored once
(`event_id`, a hash of the natural key user, item, ts, event).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from atlasrec.catalog import PolicyAttributeError, parse_policy
from atlasrec.clock import utcnow
from atlasrec.dataplane.plane import RegionDataPlane
from atlasrec.dataplane.repository import TenantData
from atlasrec.dataplane.tables import IngestBatch
from atlasrec.errors import IngestError
from atlasrec.ingest.interactions import read_interactions
from atlasrec.ingest.rows import Rejected, file_sha256, identifier, rows, text
from atlasrec.offline_ingest import IngestStage
from atlasrec.offline_store import TenantOffline, roll_forward
from atlasrec.tenancy import Scope

CHUNK_ROWS = 5_000
ITEM_COLUMNS = ("item_id", "title")
ITEM_KNOWN = ("item_id", "title", "category", "description")


@dataclass(frozen=True)
class FileReport:
    """What one file's ingest did."""

    file: str
    sha256: str
    rows: int
    written: int
    already_ingested: bool


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did, per file."""

    tenant_id: str
    region: str
    items: FileReport | None
    interactions: FileReport | None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON output and the audit record."""
        return asdict(self)


def _load_items(data: TenantData, path: Path) -> tuple[int, int]:
    """Upsert the file's items in chunks; an item id given twice in the file is refused."""
    count = written = 0
    chunk: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    now = utcnow()
    for line, row in rows(path, ITEM_COLUMNS, None):
        item_id = identifier(row["item_id"], line, "item_id")
        if item_id in lines:
            raise Rejected(line, "item_id", f"{item_id!r} repeats line {lines[item_id]}")
        lines[item_id] = line
        attributes = {k: v for k, v in row.items() if k not in ITEM_KNOWN and v != ""}
        try:
            parse_policy(attributes)
        except PolicyAttributeError as exc:
            raise Rejected(line, exc.field, exc.reason) from None
        chunk[item_id] = {
            "item_id": item_id,
            "title": text(row["title"], line, "title", required=True),
            "category": text(row.get("category", ""), line, "category", required=False),
            "description": text(row.get("description", ""), line, "description", required=False),
            "attributes": attributes,
            "updated_at": now,
        }
        count += 1
        if len(chunk) >= CHUNK_ROWS:
            _upsert_chunk(data, chunk, lines, now)
            written, chunk, lines = written + len(chunk), {}, {}
    _upsert_chunk(data, chunk, lines, now)
    return count, written + len(chunk)


def _upsert_chunk(
    data: TenantData, chunk: dict[str, dict[str, Any]], lines: dict[str, int], now: datetime
) -> None:
    """Write a chunk of items, refusing an id an earlier chunk of the same file wrote."""
    again = data.items_updated_at(list(chunk), now)
    if again:
        first = min(again, key=lines.__getitem__)
        raise Rejected(lines[first], "item_id", f"{first!r} repeats an earlier line")
    data.upsert_items(list(chunk.values()))


def _stage_interactions(data: TenantData, path: Path, secret: bytes, stage: IngestStage) -> int:
    """Validate the whole file into `stage`; the number of rows read."""
    pseudonym = data.pseudonymiser(secret)
    count = 0
    for table in read_interactions(path, pseudonym, lambda: pa.array(data.item_ids(), pa.string())):
        stage.add(table)
        count += table.num_rows
    return count


def ingest(
    plane: RegionDataPlane[Any],
    scope: Scope,
    *,
    secret: bytes,
    actor: str,
    items: Path | None = None,
    interactions: Path | None = None,
) -> IngestReport:
    """Ingest a tenant's files all or nothing; on bad input raise IngestError, write nothing."""
    offline = plane.offline.scoped(scope, actor=actor) if interactions is not None else None
    if offline is None:
        return _ingest(plane, scope, None, secret=secret, actor=actor, items=items)
    with offline.ingest_lock():
        roll_forward(offline.folder)  # a crashed ingest's journal first
        return _ingest(
            plane,
            scope,
            offline,
            secret=secret,
            actor=actor,
            items=items,
            interactions=interactions,
        )


def _ingest(
    plane: RegionDataPlane[Any],
    scope: Scope,
    offline: TenantOffline | None,
    *,
    secret: bytes,
    actor: str,
    items: Path | None,
    interactions: Path | None = None,
) -> IngestReport:
    reports: dict[str, FileReport | None] = {"items": None, "interactions": None}
    current = ""
    stage: IngestStage | None = None
    try:
        with plane.session(scope, actor=actor, action="ingest") as session:
            data = TenantData(session)
            for kind, path in (("items", items), ("interactions", interactions)):
                if path is None:
                    continue
                current = path.name
                if not path.is_file():
                    raise Rejected(None, None, "file not found")
                sha = file_sha256(path)
                if data.find_batch(kind, sha) is not None:
                    reports[kind] = FileReport(path.name, sha, 0, 0, already_ingested=True)
                    continue
                batch_id = uuid.uuid4().hex
                if kind == "items":
                    count, written = _load_items(data, path)
                else:
                    assert offline is not None
                    stage = IngestStage(offline, sha)
                    count = _stage_interactions(data, path, secret, stage)
                    written = stage.finish()
                data.add_batch(
                    IngestBatch(
                        id=batch_id,
                        tenant_id=scope.tenant_id,
                        kind=kind,
                        sha256=sha,
                        filename=path.name[:255],
                        rows=count,
                        inserted=written,
                    )
                )
                reports[kind] = FileReport(path.name, sha, count, written, already_ingested=False)
            report = IngestReport(
                scope.tenant_id, scope.region.value, reports["items"], reports["interactions"]
            )
            plane.ledger.append(
                actor=actor,
                action="ingest",
                subject=f"tenant:{scope.tenant_id}",
                tenant_id=scope.tenant_id,
                details=report.as_dict(),
                session=session,
            )
            if stage is not None:
                stage.publish()  # the point of no return: rolled forward if the commit fails
    except Rejected as rejected:
        error = IngestError(
            current, rejected.line, rejected.field, rejected.reason, scope.tenant_id
        )
        plane.ledger.append(
            actor=actor,
            action="ingest.rejected",
            subject=f"tenant:{scope.tenant_id}",
            tenant_id=scope.tenant_id,
            details={
                "file": current,
                "line": rejected.line,
                "field": rejected.field,
                "reason": rejected.reason,
            },
        )
        raise error from None
    finally:
        if stage is not None and not stage.published:
            stage.discard()
    if stage is not None:
        stage.complete()
    return report
