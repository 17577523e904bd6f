"""Searching a region's ledger for the audit log: filters, keyset pages and their counts.

A page is keyset-paged on `seq` (newest first): `before` gives the page of older records,
`after` the page of newer ones. Searching by tenant goes through the ledger's tenant index
(`audit_record_tenants`), so it finds every record that concerns the tenant, federation
rounds included. Each page costs its query and two indexed COUNTs.

A tenant officer's text search runs on the records as they are shown to them (other
tenants' ids redacted, `audit.ui.redaction`), so it cannot probe for another tenant's id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlmodel import Session, col, or_, select

from atlasrec.dataplane.tables import AuditRecord, AuditRecordTenant

PAGE_SIZES = (25, 50, 100, 200, 500)


@dataclass(frozen=True)
class LogFilters:
    """What the officer searches for, within what they may read."""

    tenants: frozenset[str] | None
    """The tenants whose records to search (None: the whole region's)."""
    action: str | None = None
    """An action prefix."""
    q: str | None = None
    """Text in the subject, details or actor."""


@dataclass(frozen=True)
class LogPage:
    """One page of matching records, newest first, and where it lies among them."""

    records: list[AuditRecord]
    total: int
    newer: int
    """How many matching records are newer than this page."""

    @property
    def first(self) -> int:
        """The 1-based position of the page's first record among the matches (newest = 1)."""
        return self.newer + 1 if self.records else 0

    @property
    def last(self) -> int:
        """The position of the page's last record."""
        return self.newer + len(self.records)

    @property
    def has_older(self) -> bool:
        """Whether older matching records exist past this page."""
        return self.last < self.total


def search_page(
    session: Session,
    filters: LogFilters,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = 100,
) -> LogPage:
    """The page of matching records older than `before`, or else newer than `after`."""
    where = _conditions(filters)
    if after is not None:
        newer = _fetch(session, [*where, col(AuditRecord.seq) > after], limit, oldest_first=True)
        records = newer[::-1]
        if len(records) < limit:  # near the top: show the newest full page instead
            records = _fetch(session, where, limit)
    else:
        bound = [col(AuditRecord.seq) < before] if before is not None else []
        records = _fetch(session, [*where, *bound], limit)
    return LogPage(records, _count(session, where), _count_newer(session, where, records, before))


def search_page_shown(
    session: Session,
    filters: LogFilters,
    shown: Callable[[AuditRecord], str],
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = 100,
) -> LogPage:
    """Like `search_page`, but `filters.q` is matched against `shown(record)`.

    For redacted views: every record of the other filters is read (one indexed query).
    """
    unfiltered = LogFilters(filters.tenants, filters.action)
    query = select(AuditRecord).where(*_conditions(unfiltered)).order_by(col(AuditRecord.seq))
    q = (filters.q or "").casefold()
    matches = [
        r
        for r in session.execute(query.execution_options(yield_per=2000)).scalars()
        if q in shown(r).casefold()
    ][::-1]
    return page_of(matches, before=before, after=after, limit=limit)


def page_of(
    matches: Sequence[AuditRecord], *, before: int | None, after: int | None, limit: int
) -> LogPage:
    """The page of `matches` (newest first) older than `before`, or else newer than `after`."""
    start = 0
    if after is not None:
        newer = sum(1 for r in matches if r.seq > after)
        start = max(newer - limit, 0)
    elif before is not None:
        start = sum(1 for r in matches if r.seq >= before)
    return LogPage(list(matches[start : start + limit]), len(matches), start)


def _conditions(filters: LogFilters) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if filters.tenants is not None:
        indexed = select(AuditRecordTenant.seq).where(
            col(AuditRecordTenant.tenant_id).in_(sorted(filters.tenants))
        )
        where.append(col(AuditRecord.seq).in_(indexed))
    if filters.action:
        where.append(col(AuditRecord.action).startswith(filters.action, autoescape=True))
    if filters.q:
        where.append(
            or_(
                col(AuditRecord.subject).contains(filters.q, autoescape=True),
                col(AuditRecord.details).contains(filters.q, autoescape=True),
                col(AuditRecord.actor).contains(filters.q, autoescape=True),
            )
        )
    return where


def _fetch(
    session: Session, where: list[ColumnElement[bool]], limit: int, *, oldest_first: bool = False
) -> list[AuditRecord]:
    order = col(AuditRecord.seq) if oldest_first else col(AuditRecord.seq).desc()
    query = select(AuditRecord).where(*where).order_by(order).limit(limit)
    return list(session.execute(query).scalars().all())


def _count(session: Session, where: list[ColumnElement[bool]]) -> int:
    query: Any = select(func.count()).select_from(AuditRecord).where(*where)
    return int(session.execute(query).scalar_one())


def _count_newer(
    session: Session,
    where: list[ColumnElement[bool]],
    records: list[AuditRecord],
    before: int | None,
) -> int:
    if records:
        return _count(session, [*where, col(AuditRecord.seq) > records[0].seq])
    if before is not None:
        return _count(session, [*where, col(AuditRecord.seq) >= before])
    return 0
