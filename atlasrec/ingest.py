"""Ingest of a tenant's catalog and interaction CSV files (the CLI's `ingest` contract).

items.csv:        item_id,title[,category,description,...]   (other columns -> attributes)
interactions.csv: user_id,item_id,timestamp[,event,weight]

Files are streamed in chunks (bounded memory), validated row by row, and written in one
transaction: a rejected file leaves nothing behind, and the error names the line and field.
User ids are pseudonymised with the tenant's key before they reach the database. Re-ingesting
the same content is a no-op (file hash), and repeated rows are ignored (natural key).
"""

from __future__ import annotations

import csv
import hashlib
import math
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atlasrec.catalog import PolicyAttributeError, parse_policy
from atlasrec.clock import utcnow
from atlasrec.dataplane.plane import RegionDataPlane
from atlasrec.dataplane.repository import TenantData
from atlasrec.dataplane.tables import IngestBatch
from atlasrec.errors import IngestError
from atlasrec.tenancy import Scope

CHUNK_ROWS = 5_000
MAX_ID_LEN = 256
MAX_TEXT_LEN = 20_000
MAX_EVENT_LEN = 32
ITEM_COLUMNS = ("item_id", "title")
ITEM_KNOWN = ("item_id", "title", "category", "description")
INTERACTION_REQUIRED = ("user_id", "item_id", "timestamp")
INTERACTION_COLUMNS = (*INTERACTION_REQUIRED, "event", "weight")
DEFAULT_EVENT = "interaction"
MIN_TS, MAX_TS = 0, 4_102_444_800  # 1970-01-01 .. 2100-01-01

csv.field_size_limit(1 << 20)


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


class _Rejected(Exception):
    def __init__(self, line: int | None, field: str | None, reason: str) -> None:
        self.line, self.field, self.reason = line, field, reason


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rows(
    path: Path, required: tuple[str, ...], allowed: tuple[str, ...] | None
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) pairs; checks the header and each row's field count."""
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise _Rejected(None, None, f"cannot read file: {exc.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise _Rejected(1, None, "file is empty (expected a header row)")
            columns = [h.strip().lower() for h in header]
            for name in columns:
                if not name:
                    raise _Rejected(1, None, "header has an empty column name")
                if columns.count(name) > 1:
                    raise _Rejected(1, name, "column appears more than once in the header")
                if allowed is not None and name not in allowed:
                    raise _Rejected(1, name, f"unknown column (allowed: {', '.join(allowed)})")
            missing = [c for c in required if c not in columns]
            if missing:
                raise _Rejected(1, missing[0], f"required column missing from header {header}")
            line = reader.line_num
            for values in reader:
                start, line = line + 1, reader.line_num
                if not values or values == [""]:
                    continue
                if len(values) != len(columns):
                    raise _Rejected(
                        start, None, f"expected {len(columns)} fields, found {len(values)}"
                    )
                row = dict(zip(columns, values, strict=True))
                for name, value in row.items():
                    if "\x00" in value:
                        raise _Rejected(start, name, "contains a NUL byte")
                yield start, row
        except UnicodeDecodeError:
            raise _Rejected(reader.line_num + 1, None, "not valid UTF-8") from None
        except csv.Error as exc:
            raise _Rejected(reader.line_num, None, f"malformed CSV: {exc}") from None


def _identifier(value: str, line: int, field: str) -> str:
    value = value.strip()
    if not value:
        raise _Rejected(line, field, "is empty")
    if len(value) > MAX_ID_LEN:
        raise _Rejected(line, field, f"is longer than {MAX_ID_LEN} characters")
    if any(ord(ch) < 32 for ch in value):
        raise _Rejected(line, field, "contains control characters")
    return value


def _text(value: str, line: int, field: str, *, required: bool) -> str | None:
    value = value.strip()
    if not value:
        if required:
            raise _Rejected(line, field, "is empty")
        return None
    if len(value) > MAX_TEXT_LEN:
        raise _Rejected(line, field, f"is longer than {MAX_TEXT_LEN} characters")
    return value


def parse_timestamp(value: str, line: int) -> int:
    """Epoch seconds from an integer/decimal epoch or an ISO 8601 date-time (UTC if naive)."""
    value = value.strip()
    if not value:
        raise _Rejected(line, "timestamp", "is empty")
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _Rejected(
                line, "timestamp", f"{value!r} is neither epoch seconds nor ISO 8601"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = parsed.timestamp()
    if not math.isfinite(seconds) or not MIN_TS <= seconds < MAX_TS:
        raise _Rejected(line, "timestamp", f"{value!r} is outside 1970..2100")
    return int(seconds)


def _weight(value: str | None, line: int) -> float:
    if value is None or not value.strip():
        return 1.0
    try:
        weight = float(value)
    except ValueError:
        raise _Rejected(line, "weight", f"{value!r} is not a number") from None
    if not math.isfinite(weight):
        raise _Rejected(line, "weight", f"{value!r} is not finite")
    return weight


def _load_items(data: TenantData, path: Path) -> tuple[int, int]:
    rows = written = 0
    chunk: dict[str, dict[str, Any]] = {}
    now = utcnow()
    for line, row in _rows(path, ITEM_COLUMNS, None):
        item_id = _identifier(row["item_id"], line, "item_id")
        attributes = {k: v for k, v in row.items() if k not in ITEM_KNOWN and v != ""}
        try:
            parse_policy(attributes)
        except PolicyAttributeError as exc:
            raise _Rejected(line, exc.field, exc.reason) from None
        chunk[item_id] = {
            "item_id": item_id,
            "title": _text(row["title"], line, "title", required=True),
            "category": _text(row.get("category", ""), line, "category", required=False),
            "description": _text(row.get("description", ""), line, "description", required=False),
            "attributes": attributes,
            "updated_at": now,
        }
        rows += 1
        if len(chunk) >= CHUNK_ROWS:
            data.upsert_items(list(chunk.values()))
            written, chunk = written + len(chunk), {}
    data.upsert_items(list(chunk.values()))
    return rows, written + len(chunk)


def _load_interactions(
    data: TenantData, path: Path, secret: bytes, batch_id: str
) -> tuple[int, int]:
    pseudonym = data.pseudonymiser(secret)
    rows = written = 0
    chunk: list[tuple[int, dict[str, Any]]] = []

    def flush() -> int:
        known = data.known_item_ids(r["item_id"] for _, r in chunk)
        for line, r in chunk:
            if r["item_id"] not in known:
                raise _Rejected(line, "item_id", f"{r['item_id']!r} is not in the tenant's catalog")
        return data.insert_interactions([r for _, r in chunk])

    for line, row in _rows(path, INTERACTION_REQUIRED, INTERACTION_COLUMNS):
        user_id = _identifier(row["user_id"], line, "user_id")
        event = (row.get("event") or "").strip() or DEFAULT_EVENT
        if len(event) > MAX_EVENT_LEN:
            raise _Rejected(line, "event", f"is longer than {MAX_EVENT_LEN} characters")
        chunk.append(
            (
                line,
                {
                    "user_key": pseudonym(user_id),
                    "item_id": _identifier(row["item_id"], line, "item_id"),
                    "ts": parse_timestamp(row["timestamp"], line),
                    "event": event,
                    "weight": _weight(row.get("weight"), line),
                    "batch_id": batch_id,
                },
            )
        )
        rows += 1
        if len(chunk) >= CHUNK_ROWS:
            written += flush()
            chunk = []
    if chunk:
        written += flush()
    return rows, written


def ingest(
    plane: RegionDataPlane[Any],
    scope: Scope,
    *,
    secret: bytes,
    actor: str,
    items: Path | None = None,
    interactions: Path | None = None,
) -> IngestReport:
    """Ingest a tenant's files in one transaction; on bad input raise IngestError, write nothing."""
    reports: dict[str, FileReport | None] = {"items": None, "interactions": None}
    current = ""
    try:
        with plane.session(scope, actor=actor, action="ingest") as session:
            data = TenantData(session)
            for kind, path in (("items", items), ("interactions", interactions)):
                if path is None:
                    continue
                current = path.name
                if not path.is_file():
                    raise _Rejected(None, None, "file not found")
                sha = file_sha256(path)
                if data.find_batch(kind, sha) is not None:
                    reports[kind] = FileReport(path.name, sha, 0, 0, already_ingested=True)
                    continue
                batch_id = uuid.uuid4().hex
                if kind == "items":
                    rows, written = _load_items(data, path)
                else:
                    rows, written = _load_interactions(data, path, secret, batch_id)
                data.add_batch(
                    IngestBatch(
                        id=batch_id,
                        tenant_id=scope.tenant_id,
                        kind=kind,
                        sha256=sha,
                        filename=path.name[:255],
                        rows=rows,
                        inserted=written,
                    )
                )
                reports[kind] = FileReport(path.name, sha, rows, written, already_ingested=False)
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
    except _Rejected as rejected:
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
    return report
