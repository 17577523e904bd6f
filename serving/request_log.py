"""Appends the served requests' records to the region's log, off the hot path, in batches.

A request only queues its `ServedRecord` (no I/O). A thread appends what was queued, per
tenant, to the region's log (`<root>.<region>.served.<tenant>`, de-duplicated by request
id) at most every `flush_s` seconds, or sooner when `max_batch` records are waiting; the
log's `requests` consumer (`atlasrec/served_requests.py`) then writes them to the region
DB, with a ledger record per batch, exactly once.

Durability: a record is durable once its batch is appended, so a kill -9 loses at most the
records of the last `flush_s` seconds (plus one append's round trip). `close()` appends
everything still queued, so a graceful shutdown loses nothing.

When the log cannot be reached, the records are held back in memory and appended again
at most every `retry_s` seconds; serving goes on regardless (a request never waits for,
or fails because of, the request log). At most `max_held` records are held: beyond that
the oldest (of the tenant holding most) are dropped. Failed appends, dropped records (also
those of a tenant the boundary refuses, which is audited) and held-back records are
counted in `stats`, shown by /healthz/detail and /metrics.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from atlasrec.errors import BoundaryViolation, UnknownTenantError
from atlasrec.eventlog.base import EventLog
from atlasrec.eventlog.records import ServedRecord
from atlasrec.tenancy import Scope

ACTOR = "serving"
log = logging.getLogger("atlasrec.serving")

_Entry = tuple[Scope, ServedRecord] | threading.Event | None
"""A record to append, a flush marker, or None to stop."""


@dataclass
class RequestLogStats:
    """What the request log has done since start."""

    logged: int = 0
    """Records appended to the region's log."""
    failures: int = 0
    """Appends that failed (the log unreachable): their records were held back."""
    dropped: int = 0
    """Records given up: over `max_held` while the log was down, or refused at the boundary."""
    held: int = 0
    """Records waiting for the log to come back."""


class RequestLog:
    """The region's request log: served requests' records, appended in batches."""

    def __init__(
        self,
        events: EventLog,
        *,
        flush_s: float = 0.2,
        max_batch: int = 2_000,
        retry_s: float = 1.0,
        max_held: int = 100_000,
    ) -> None:
        self.events = events
        self.flush_s = flush_s
        self.max_batch = max_batch
        self.retry_s = retry_s
        self.max_held = max_held
        self.stats = RequestLogStats()
        self._queue: queue.Queue[_Entry] = queue.Queue()
        self._held: dict[Scope, list[ServedRecord]] = defaultdict(list)
        self._retry_at = 0.0
        self._thread = threading.Thread(target=self._run, name="serving-request-log", daemon=True)
        self._thread.start()

    def served(self, scope: Scope, record: ServedRecord) -> None:
        """Queue one served request's record (no I/O)."""
        self._queue.put((scope, record))

    def flush(self, timeout: float = 10.0) -> bool:
        """Append everything queued so far now; whether all of it is in the log."""
        marker = threading.Event()
        self._queue.put(marker)
        return marker.wait(timeout) and self.stats.held == 0

    def close(self) -> None:
        """Append everything still queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            entries = self._take()
            stopping = None in entries
            markers = [e for e in entries if isinstance(e, threading.Event)]
            for entry in entries:
                if isinstance(entry, tuple):
                    self._held[entry[0]].append(entry[1])
            if self._held and (stopping or markers or time.monotonic() >= self._retry_at):
                self._append_held()
            self._bound()
            for marker in markers:
                marker.set()
        if self._held:
            log.error("request log: %d served records not logged at shutdown", self.stats.held)

    def _take(self) -> list[_Entry]:
        """What arrives within `flush_s` of the first entry (up to `max_batch`, or a marker)."""
        try:
            first = self._queue.get(timeout=self.retry_s if self._held else None)
        except queue.Empty:
            return []
        entries = [first]
        deadline = time.monotonic() + self.flush_s
        while isinstance(entries[-1], tuple) and len(entries) < self.max_batch:
            try:
                entries.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return entries

    def _append_held(self) -> None:
        """Append each tenant's held records; keep them (and retry later) if the log is down."""
        for scope in list(self._held):
            records = self._held[scope]
            while records:
                chunk = records[: self.max_batch]
                try:
                    self.events.append(scope, chunk, actor=ACTOR)
                except (BoundaryViolation, UnknownTenantError) as exc:  # refused and audited
                    self.stats.dropped += len(records)
                    log.warning("request log: %d records dropped: %s", len(records), exc)
                    records.clear()
                except Exception as exc:  # keep serving; the records stay held
                    self.stats.failures += 1
                    self._retry_at = time.monotonic() + self.retry_s
                    log.warning("request log: %d records held back: %s", len(records), exc)
                    return
                else:
                    self.stats.logged += len(chunk)
                    del records[: len(chunk)]
            del self._held[scope]

    def _bound(self) -> None:
        """Drop the oldest held records beyond `max_held`; count what is held."""
        held = sum(len(r) for r in self._held.values())
        while held > self.max_held:
            scope = max(self._held, key=lambda s: len(self._held[s]))
            excess = min(held - self.max_held, len(self._held[scope]))
            del self._held[scope][:excess]
            if not self._held[scope]:
                del self._held[scope]
            self.stats.dropped += excess
            held -= excess
            log.error("request log: %d held records of %s dropped", excess, scope.tenant_id)
        self.stats.held = held
