"""Served requests' records, durable before their responses are sent.

The route awaits `record()`, which resolves once the record is in the region's log
(`<root>.<region>.served.<tenant>`, de-duplicated by request id), or, while the log cannot
be reached, in this process's spool (`atlasrec.eventlog.spool`, on disk). A thread appends
what is queued as one batch per tenant per append (group commit: what arrives during an
append goes in the next), so a request waits about one append's round trip and a busy
process makes fewer, larger appends. The log's `requests` consumer
(`atlasrec/served_requests.py`) then writes them to the region DB, exactly once.

An append that fails, or is not confirmed within `append_wait_s` (a log that stopped
answering), sends its records to the spool, and for `retry_s` after it records go straight
there. A
second thread appends the spool to the log, oldest first, every `retry_s` (a record both
appended late and spooled is kept once: the log de-duplicates by request id). A spool left
by a killed process is claimed and replayed by the next request log on the same folder.

When neither the log nor the spool takes a record (or `record()` waits past its timeout)
the answer is False and the route answers 503: a response is never sent without its
record (a record that lands after its request's timeout is still kept: the log may hold a
record of a request answered 503, never the reverse). Failed appends, spooled records,
records not kept and those of a tenant the boundary refuses (audited) are counted in
`stats`, shown by /healthz/detail and /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from atlasrec.errors import BoundaryViolation, UnknownTenantError
from atlasrec.eventlog.base import EventLog
from atlasrec.eventlog.records import SERVED, ServedRecord
from atlasrec.eventlog.spool import RecordSpool
from atlasrec.tenancy import Scope

ACTOR = "serving"
log = logging.getLogger("atlasrec.serving")

Settle = Callable[[bool], None]
"""Told whether a record was kept (in the log or the spool)."""
_Entry = tuple[Scope, ServedRecord, Settle] | threading.Event | None
"""A record to keep, a flush marker, or None to stop."""


@dataclass
class RequestLogStats:
    """What the request log has done since start."""

    logged: int = 0
    """Records appended to the region's log (directly, or from the spool)."""
    failures: int = 0
    """Appends that failed (the log unreachable): their records went to the spool."""
    spooled: int = 0
    """Records kept in the spool while the log was unreachable."""
    dropped: int = 0
    """Records not kept (neither log nor spool took them, or the boundary refused them)."""
    held: int = 0
    """Records in the spool now, waiting for the log."""


class RequestLog:
    """The region's request log: served requests' records, kept before the response."""

    def __init__(
        self,
        events: EventLog,
        spool_dir: Path,
        *,
        max_batch: int = 2_000,
        append_wait_s: float = 0.5,
        retry_s: float = 1.0,
    ) -> None:
        self.events = events
        self.max_batch = max_batch
        self.append_wait_s = append_wait_s
        self.retry_s = retry_s
        self.stats = RequestLogStats()
        self.spool = RecordSpool.create(spool_dir, SERVED, events.region)
        self._orphans = RecordSpool.orphans(spool_dir, SERVED, events.region)
        self.stats.held = sum(len(orphan) for orphan in self._orphans)
        self._queue: queue.Queue[_Entry] = queue.Queue()
        self._down_until = 0.0
        self._replaying = threading.Lock()
        self._counting = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=target, name=name, daemon=True)
            for target, name in ((self._write, "serving-request-log"), (self._retry, "spool"))
        ]
        for thread in self._threads:
            thread.start()

    async def record(self, scope: Scope, record: ServedRecord, timeout_s: float) -> bool:
        """Keep one served request's record; whether it was kept within `timeout_s`."""
        loop = asyncio.get_running_loop()
        kept: asyncio.Future[bool] = loop.create_future()

        def resolve(ok: bool) -> None:
            if not kept.done():
                kept.set_result(ok)

        def settle(ok: bool) -> None:
            with suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(resolve, ok)

        self.served(scope, record, settle)
        try:
            async with asyncio.timeout(timeout_s):
                return await kept
        except TimeoutError:
            return False

    def served(self, scope: Scope, record: ServedRecord, settle: Settle | None = None) -> None:
        """Queue one record (no I/O); `settle` is told whether it was kept."""
        self._queue.put((scope, record, settle or _ignore))

    def flush(self, timeout: float = 10.0) -> bool:
        """Keep everything queued so far, retry the spool now; whether all is in the log."""
        marker = threading.Event()
        self._queue.put(marker)
        return marker.wait(timeout) and self.stats.held == 0

    def close(self) -> None:
        """Keep everything still queued, try the spool once more, then stop the threads."""
        self._queue.put(None)
        self._stop.set()
        for thread in self._threads:
            thread.join()
        if self.stats.held:
            log.error("request log: %d served records left in %s", self.stats.held, self.spool.path)
        self.spool.close()

    def _write(self) -> None:
        """Keep what is queued, one group commit at a time; replay the spool on a marker."""
        stopping = False
        while not stopping:
            entries = self._take()
            stopping = None in entries
            self._keep([e for e in entries if isinstance(e, tuple)])
            markers = [e for e in entries if isinstance(e, threading.Event)]
            if stopping or markers:
                self._replay()
            for marker in markers:
                marker.set()

    def _retry(self) -> None:
        """Every `retry_s`, append what the spools hold (once the log may be back)."""
        while not self._stop.wait(self.retry_s):
            if self.stats.held and time.monotonic() >= self._down_until:
                self._replay()

    def _take(self) -> list[_Entry]:
        """The first entry, then whatever else is already queued (up to `max_batch`)."""
        entries = [self._queue.get()]
        while isinstance(entries[-1], tuple) and len(entries) < self.max_batch:
            try:
                entries.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return entries

    def _keep(self, entries: list[tuple[Scope, ServedRecord, Settle]]) -> None:
        """Append each tenant's records (or spool them while the log is down); settle each."""
        by_scope: dict[Scope, list[tuple[ServedRecord, Settle]]] = defaultdict(list)
        for scope, record, settle in entries:
            by_scope[scope].append((record, settle))
        for scope, pending in by_scope.items():
            records = [r for r, _ in pending]
            down = time.monotonic() < self._down_until
            ok = None if down else self._append(scope, records, self.append_wait_s)
            if ok is None:
                ok = self._spool(scope, records)
            for _, settle in pending:
                settle(ok)

    def _append(
        self, scope: Scope, records: list[ServedRecord], timeout_s: float | None = None
    ) -> bool | None:
        """Append to the log: True, False (refused at the boundary, audited), None (down)."""
        try:
            self.events.append(scope, records, actor=ACTOR, timeout_s=timeout_s)
        except (BoundaryViolation, UnknownTenantError) as exc:
            self._count(dropped=len(records))
            log.warning("request log: %d records refused: %s", len(records), exc)
            return False
        except Exception as exc:
            self._went_down(str(exc))
            return None
        self._count(logged=len(records))
        return True

    def _went_down(self, why: str) -> None:
        self._down_until = time.monotonic() + self.retry_s
        self._count(failures=1)
        log.warning("request log: the region's log is unavailable (%s); spooling", why)

    def _spool(self, scope: Scope, records: list[ServedRecord]) -> bool:
        """Keep records in the spool until the log is back; whether they were kept."""
        try:
            self.spool.put(scope, records)
        except Exception:
            self._count(dropped=len(records))
            log.exception("request log: %d records neither logged nor spooled", len(records))
            return False
        self._count(spooled=len(records), held=len(records))
        return True

    def _replay(self) -> None:
        """Append the spools' records to the log, oldest first, until it fails."""
        with self._replaying:
            for spool in [*self._orphans, self.spool]:
                while (batch := spool.oldest(self.max_batch)) is not None:
                    scope, ids, records = batch
                    if self._append(scope, records) is None:
                        return
                    spool.remove(ids)
                    self._count(held=-len(ids))
            for orphan in self._orphans:
                orphan.close()
            self._orphans = []

    def _count(self, **changes: int) -> None:
        """Add to `stats` (two threads count)."""
        with self._counting:
            for name, change in changes.items():
                setattr(self.stats, name, getattr(self.stats, name) + change)


def _ignore(ok: bool) -> None:
    """The settle of a record nobody waits for."""
