"""Append-only, hash-chained audit ledger of one region.

Each record's hash covers its content and its predecessor's hash, so editing, deleting or
reordering a past record breaks the chain at that record. The latest head is also anchored
in the control plane, which catches records cut from the end of the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine, event, func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from atlasrec.dataplane.audit_tenants import record_tenants
from atlasrec.dataplane.tables import AuditRecord, AuditRecordTenant
from atlasrec.tenancy import Region

GENESIS_HASH = "0" * 64
_APPEND_LOCK = 0x61746C6173  # pg advisory lock key serialising appends ("atlas")
_RETRIES = 8


class Anchor(Protocol):
    """Where a ledger's latest head is kept, outside the ledger's own database."""

    def advance_anchor(self, region: Region, seq: int, hash_: str) -> None:
        """Record `(seq, hash_)` as the head if it is newer than the stored one."""

    def anchor_of(self, region: Region) -> tuple[int, str] | None:
        """The stored head of the region's ledger, if any."""


def canonical_json(value: Any) -> str:
    """Deterministic JSON text: sorted keys, no whitespace, ASCII-escaped.

    ASCII escaping lets any string, even one with lone surrogates from an undecodable file
    name, be stored and hashed.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def compute_hash(record: AuditRecord) -> str:
    """The SHA-256 over a record's content and its predecessor's hash."""
    body = canonical_json(
        [
            record.seq,
            record.ts,
            record.tenant_id,
            record.region,
            record.actor,
            record.action,
            record.subject,
            record.details,
            record.prev_hash,
        ]
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _index(session: Session, record: AuditRecord) -> None:
    """Index the record under every tenant it concerns, in its transaction.

    The tenants are read back from the stored details, as migration r0007 indexed older
    records. Index rows that a rewritten chain left behind for this seq are kept: `verify`
    names the rewrite.
    """
    rows = [{"seq": record.seq, "tenant_id": t} for t in sorted(record_tenants(record))]
    if rows:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        table: Any = AuditRecordTenant.__table__  # type: ignore[attr-defined]
        session.execute(dialect.insert(table).on_conflict_do_nothing(), rows)


@dataclass(frozen=True)
class Verification:
    """Outcome of checking a ledger's chain."""

    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str = ""

    def describe(self, region: Region) -> str:
        """One line for operators."""
        if self.ok:
            return f"region {region.value}: audit chain intact ({self.records} records)"
        return (
            f"region {region.value}: audit chain broken at record "
            f"seq={self.first_bad_seq}: {self.reason}"
        )


class AuditLedger:
    """The audit ledger of one region, stored in that region's database."""

    def __init__(self, region: Region, engine: Engine, anchor: Anchor | None = None) -> None:
        self.region = region
        self.engine = engine
        self.anchor = anchor

    def append(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        tenant_id: str | None = None,
        details: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> AuditRecord:
        """Append a record. Inside `session`, it commits or rolls back with that transaction."""
        if session is not None:
            record = self._append_in(session, actor, action, subject, tenant_id, details)
            if self.anchor is not None:
                seq, hash_ = record.seq, record.hash
                event.listen(
                    session, "after_commit", lambda _s: self._advance(seq, hash_), once=True
                )
            return record
        for attempt in range(_RETRIES):
            try:
                with Session(self.engine, expire_on_commit=False) as own, own.begin():
                    record = self._append_in(own, actor, action, subject, tenant_id, details)
                self._advance(record.seq, record.hash)
                return record
            except (IntegrityError, OperationalError):  # a concurrent writer took this seq
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _append_in(
        self,
        session: Session,
        actor: str,
        action: str,
        subject: str,
        tenant_id: str | None,
        details: dict[str, Any] | None,
    ) -> AuditRecord:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK})
        last = session.execute(
            select(AuditRecord.seq, AuditRecord.hash).order_by(col(AuditRecord.seq).desc()).limit(1)
        ).first()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        record = AuditRecord(
            seq=seq,
            ts=datetime.now(UTC).isoformat(timespec="microseconds"),
            tenant_id=tenant_id,
            region=self.region.value,
            actor=actor,
            action=action,
            subject=subject,
            details=canonical_json(details or {}),
            prev_hash=prev_hash,
            hash="",
        )
        record.hash = compute_hash(record)
        session.add(record)
        session.flush()
        _index(session, record)
        return record

    def _advance(self, seq: int, hash_: str) -> None:
        if self.anchor is not None:
            self.anchor.advance_anchor(self.region, seq, hash_)

    def records(
        self,
        *,
        tenant_id: str | None = None,
        action: str | None = None,
        after_seq: int = 0,
        limit: int | None = 100,
    ) -> list[AuditRecord]:
        """Records in chain order, optionally filtered by tenant and action prefix."""
        query = (
            select(AuditRecord)
            .where(col(AuditRecord.seq) > after_seq)
            .order_by(col(AuditRecord.seq))
        )
        if tenant_id is not None:
            query = query.where(col(AuditRecord.tenant_id) == tenant_id)
        if action is not None:
            query = query.where(col(AuditRecord.action).startswith(action))
        if limit is not None:
            query = query.limit(limit)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.execute(query).scalars().all())

    def latest_by_tenant(self, action: str) -> dict[str, AuditRecord]:
        """Each tenant's newest record of exactly `action` (one query, on the action index)."""
        newest = (
            select(func.max(AuditRecord.seq))
            .where(col(AuditRecord.action) == action, col(AuditRecord.tenant_id).is_not(None))
            .group_by(col(AuditRecord.tenant_id))
        )
        query = select(AuditRecord).where(col(AuditRecord.seq).in_(newest))
        with Session(self.engine, expire_on_commit=False) as session:
            return {r.tenant_id: r for r in session.execute(query).scalars() if r.tenant_id}

    def concerning(
        self, tenant_id: str, actions: Sequence[str], *, from_seq: int = 0
    ) -> list[AuditRecord]:
        """Records of `actions` from `from_seq` on that concern the tenant, in chain order.

        Read through the tenant index (`audit_record_tenants`), not by scanning the actions.
        """
        query = (
            select(AuditRecord)
            .join(AuditRecordTenant, col(AuditRecordTenant.seq) == col(AuditRecord.seq))
            .where(
                col(AuditRecordTenant.tenant_id) == tenant_id,
                col(AuditRecord.action).in_(actions),
                col(AuditRecord.seq) >= from_seq,
            )
            .order_by(col(AuditRecord.seq))
        )
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.execute(query).scalars().all())

    def newest(self, action: str, *, tenant_id: str | None = None, limit: int) -> list[AuditRecord]:
        """The newest `limit` records of `action` (of `tenant_id`, if given), newest first."""
        query = (
            select(AuditRecord)
            .where(col(AuditRecord.action) == action)
            .order_by(col(AuditRecord.seq).desc())
            .limit(limit)
        )
        if tenant_id is not None:
            query = query.where(col(AuditRecord.tenant_id) == tenant_id)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.execute(query).scalars().all())

    def first_seq_at(self, ts: str) -> int:
        """The seq of the first record stamped at or after `ts` (ISO text); past the end if none.

        Records are appended in time order, so this is a binary search over the primary key
        (a few dozen point reads, whatever the ledger's length).
        """
        with Session(self.engine) as session:
            lo, hi = 1, (session.execute(select(func.max(AuditRecord.seq))).scalar() or 0) + 1
            while lo < hi:
                mid = (lo + hi) // 2
                stamp = session.execute(
                    select(AuditRecord.ts)
                    .where(col(AuditRecord.seq) >= mid)
                    .order_by(col(AuditRecord.seq))
                    .limit(1)
                ).scalar()
                if stamp is None or stamp >= ts:
                    hi = mid
                else:
                    lo = mid + 1
            return lo

    def _iter_chain(self, session: Session) -> Iterator[AuditRecord]:
        query = select(AuditRecord).order_by(col(AuditRecord.seq)).execution_options(yield_per=2000)
        yield from session.execute(query).scalars()

    def verify(self) -> Verification:
        """Check the whole chain, and that it reaches the head anchored in the control plane."""
        expected_seq, prev_hash, n = 1, GENESIS_HASH, 0
        hashes: dict[int, str] = {}
        anchor = self.anchor.anchor_of(self.region) if self.anchor is not None else None
        with Session(self.engine) as session:
            for record in self._iter_chain(session):
                if record.seq != expected_seq:
                    return Verification(
                        False,
                        n,
                        expected_seq,
                        f"record missing (the chain jumps from seq={expected_seq - 1} "
                        f"to seq={record.seq})",
                    )
                if record.prev_hash != prev_hash:
                    return Verification(
                        False,
                        n,
                        record.seq,
                        "does not chain to the record before it (records deleted or reordered)",
                    )
                if compute_hash(record) != record.hash:
                    return Verification(
                        False, n, record.seq, "content does not match its hash (record edited)"
                    )
                if anchor is not None and record.seq == anchor[0]:
                    hashes[record.seq] = record.hash
                prev_hash, expected_seq, n = record.hash, expected_seq + 1, n + 1
        if anchor is not None:
            anchor_seq, anchor_hash = anchor
            if n < anchor_seq:
                return Verification(
                    False,
                    n,
                    n + 1,
                    f"record missing: the chain ends at seq={n} but the control plane "
                    f"anchored seq={anchor_seq} (records cut from the end)",
                )
            if hashes.get(anchor_seq) != anchor_hash:
                return Verification(
                    False,
                    n,
                    anchor_seq,
                    "differs from the head anchored in the control plane (chain rewritten)",
                )
        return Verification(True, n)
