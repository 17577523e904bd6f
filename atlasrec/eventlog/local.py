"""The embedded event log: one SQLite file per region, in WAL mode, fsynced at every commit.

The same interface as the JetStream log, for a single machine with no NATS server:
- `events` holds every appended record under a region-wide sequence number, with its kind
  (`events`, `served`); the unique `(kind, tenant_id, event_id)` makes a repeated key a
  duplicate for as long as it is held.
- A durable consumer is a cursor over one kind (the next sequence number it has not been
  handed) and a lease per delivered, unacknowledged record. A lease that expires
  (`ack_wait_s`) is handed out again, to any process sharing the consumer's name:
  delivery is at least once.
- Appends are committed with `synchronous=FULL`, so an acknowledged event survives kill -9
  and power loss; several processes may share the file (SQLite's locking serialises them).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, overload

from atlasrec.boundary import Boundary
from atlasrec.errors import ConfigError
from atlasrec.eventlog.base import ACK_WAIT_S, ConsumerLag, EventLogUnavailable
from atlasrec.eventlog.records import (
    EVENTS,
    KINDS,
    Appended,
    Delivery,
    Kind,
    LogEvent,
    R,
    Record,
)
from atlasrec.tenancy import Region, Scope

FILE_NAME = "eventlog.sqlite"
POLL_S = 0.02
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    appended_at REAL NOT NULL,
    kind TEXT NOT NULL DEFAULT 'events',
    UNIQUE (kind, tenant_id, event_id)
);
CREATE INDEX IF NOT EXISTS events_kind_seq ON events (kind, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL,
    kind TEXT NOT NULL DEFAULT 'events'
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    expires REAL NOT NULL,
    deliveries INTEGER NOT NULL,
    PRIMARY KEY (name, seq)
);
"""
_UPGRADE = """
ALTER TABLE events RENAME TO events_v1;
ALTER TABLE cursors ADD COLUMN kind TEXT NOT NULL DEFAULT 'events'
"""
_COPY = """
INSERT INTO events (seq, tenant_id, event_id, body, appended_at)
SELECT seq, tenant_id, event_id, body, appended_at FROM events_v1;
DROP TABLE events_v1
"""


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


class LocalEventLog:
    """A region's event log in one SQLite file (`<folder>/eventlog.sqlite`)."""

    def __init__(
        self,
        region: Region,
        boundary: Boundary,
        folder: Path,
        *,
        ack_wait_s: float = ACK_WAIT_S,
        busy_timeout_s: float = 10.0,
    ) -> None:
        boundary.require_region(region, "event log")
        self.region = region
        self.boundary = boundary
        self.ack_wait_s = ack_wait_s
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / FILE_NAME
        self._lock = threading.Lock()
        self._appended = {kind.name: threading.Condition(self._lock) for kind in KINDS}
        """Per kind of record: woken by this process's appends of that kind only."""
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._transaction() as db:
            upgrade = bool(_columns(db, "events")) and "kind" not in _columns(db, "events")
            if upgrade:  # a file of the events-only log: add the records' kind
                for statement in _UPGRADE.split(";"):
                    db.execute(statement)
            for statement in _SCHEMA.split(";"):
                db.execute(statement)
            if upgrade:
                for statement in _COPY.split(";"):
                    db.execute(statement)
            db.execute(
                "INSERT INTO meta VALUES ('log_id', ?) ON CONFLICT DO NOTHING", (uuid.uuid4().hex,)
            )
            self.log_id = str(
                db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0]
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; any SQLite failure becomes `EventLogUnavailable`."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise EventLogUnavailable(f"event log {self.path}: {exc}") from exc
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise EventLogUnavailable(f"event log {self.path}: commit failed: {exc}") from exc

    def append(
        self, scope: Scope, events: Sequence[Record], *, actor: str, timeout_s: float | None = None
    ) -> Appended:
        """Append a tenant's records in one fsynced transaction (duplicates keep their seq)."""
        self.boundary.admit(scope, actor=actor, action="eventlog.append")
        seqs: list[int] = []
        duplicate: list[bool] = []
        now = time.time()
        with self._lock, self._transaction() as db:
            for event in events:
                row = db.execute(
                    "SELECT seq FROM events WHERE kind = ? AND tenant_id = ? AND event_id = ?",
                    (event.kind, scope.tenant_id, event.key),
                ).fetchone()
                duplicate.append(row is not None)
                if row is None:
                    row = db.execute(
                        "INSERT INTO events (kind, tenant_id, event_id, body, appended_at) "
                        "VALUES (?, ?, ?, ?, ?) RETURNING seq",
                        (event.kind, scope.tenant_id, event.key, event.encode(), now),
                    ).fetchone()
                seqs.append(int(row[0]))
        self._notify({event.kind for event in events})
        return Appended(seqs, duplicate)

    def _notify(self, kinds: set[str]) -> None:
        for kind in kinds:
            with self._appended[kind]:
                self._appended[kind].notify_all()

    @overload
    def consumer(self, name: str) -> LocalConsumer[LogEvent]: ...
    @overload
    def consumer(self, name: str, kind: Kind[R]) -> LocalConsumer[R]: ...
    def consumer(self, name: str, kind: Kind[Any] = EVENTS) -> LocalConsumer[Any]:
        """The durable consumer `name` of `kind` (starting at the log's first record when new)."""
        with self._lock, self._transaction() as db:
            db.execute(
                "INSERT INTO cursors VALUES (?, 1, ?) ON CONFLICT DO NOTHING", (name, kind.name)
            )
            (held,) = db.execute("SELECT kind FROM cursors WHERE name = ?", (name,)).fetchone()
        if held != kind.name:
            raise ConfigError(f"consumer {name!r} of {self.path} reads {held}, not {kind.name}")
        return LocalConsumer(self, name, kind)

    def read(self, scope: Scope, from_seq: int, max_n: int) -> list[Delivery]:
        """Up to `max_n` of the scope's events from `from_seq` on, in order, outside consumers."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, tenant_id, body FROM events "
                "WHERE kind = 'events' AND tenant_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
                (scope.tenant_id, from_seq, max_n),
            ).fetchall()
        return [Delivery(seq, tenant, LogEvent.decode(body)) for seq, tenant, body in rows]

    def replay(self, name: str, from_seq: int) -> None:
        """Deliver everything from `from_seq` on again to consumer `name`."""
        with self._lock, self._transaction() as db:
            db.execute("DELETE FROM leases WHERE name = ?", (name,))
            db.execute(
                "INSERT INTO cursors (name, next_seq) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET next_seq = excluded.next_seq",
                (name, max(1, from_seq)),
            )

    def consumers(self) -> list[str]:
        """The durable consumers' names."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM cursors ORDER BY name")]

    def lags(self) -> dict[str, ConsumerLag]:
        """Every consumer's lag (from its cursor and leases)."""
        with self._lock:
            held = self._db.execute("SELECT name, kind FROM cursors ORDER BY name").fetchall()
            return {name: self._lag(name, kind) for name, kind in held}

    def _lag(self, name: str, kind: str) -> ConsumerLag:
        """Consumer `name`'s lag over records of `kind` (the caller holds the lock)."""
        db = self._db
        (start,) = db.execute("SELECT next_seq FROM cursors WHERE name = ?", (name,)).fetchone()
        (pending,) = db.execute(
            "SELECT COUNT(*) FROM events WHERE kind = ? AND seq >= ?", (kind, start)
        ).fetchone()
        leased, lowest = db.execute(
            "SELECT COUNT(*), MIN(seq) FROM leases WHERE name = ?", (name,)
        ).fetchone()
        floor = (start if lowest is None else lowest) - 1
        return ConsumerLag(int(pending), int(leased), int(floor))

    def count(self, scope: Scope) -> int:
        """Events held for the scope's tenant."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM events WHERE kind = 'events' AND tenant_id = ?",
                (scope.tenant_id,),
            ).fetchone()
        return int(row[0])

    def last_seq(self) -> int:
        """The newest record's sequence number, of any kind (0 when empty)."""
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


class LocalConsumer(Generic[R]):
    """A durable consumer of one kind of a `LocalEventLog`: a cursor and leases, by name."""

    def __init__(self, log: LocalEventLog, name: str, kind: Kind[R]) -> None:
        self.log = log
        self.name = name
        self.kind: Kind[R] = kind

    def fetch(self, max_n: int, timeout_s: float) -> list[Delivery[R]]:
        """Expired leases first (redeliveries), then new events; waits up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            deliveries = self._take(max_n)
            remaining = deadline - time.monotonic()
            if deliveries or remaining <= 0:
                return deliveries
            appended = self.log._appended[self.kind.name]  # this process's appends of its
            with appended:  # kind wake it; it polls for other processes' appends
                appended.wait(min(remaining, POLL_S * 5))

    def _take(self, max_n: int) -> list[Delivery[R]]:
        now = time.time()
        expires = now + self.log.ack_wait_s
        with self.log._lock, self.log._transaction() as db:
            again = db.execute(
                "SELECT l.seq, e.tenant_id, e.body FROM leases l JOIN events e ON e.seq = l.seq "
                "WHERE l.name = ? AND l.expires <= ? ORDER BY l.seq LIMIT ?",
                (self.name, now, max_n),
            ).fetchall()
            db.executemany(
                "UPDATE leases SET expires = ?, deliveries = deliveries + 1 "
                "WHERE name = ? AND seq = ?",
                [(expires, self.name, r[0]) for r in again],
            )
            (start,) = db.execute(
                "SELECT next_seq FROM cursors WHERE name = ?", (self.name,)
            ).fetchone()
            new = db.execute(
                "SELECT seq, tenant_id, body FROM events WHERE kind = ? AND seq >= ? "
                "ORDER BY seq LIMIT ?",
                (self.kind.name, start, max_n - len(again)),
            ).fetchall()
            if new:
                db.executemany(
                    "INSERT INTO leases VALUES (?, ?, ?, 1)",
                    [(self.name, r[0], expires) for r in new],
                )
                db.execute(
                    "UPDATE cursors SET next_seq = ? WHERE name = ?", (new[-1][0] + 1, self.name)
                )
        decode = self.kind.decode
        return [Delivery(s, t, decode(b), True) for s, t, b in again] + [
            Delivery(s, t, decode(b)) for s, t, b in new
        ]

    def ack(self, deliveries: Sequence[Delivery[R]]) -> None:
        """Drop the deliveries' leases: they are done."""
        self._leases("DELETE FROM leases WHERE name = ? AND seq = ?", deliveries)

    def nak(self, deliveries: Sequence[Delivery[R]]) -> None:
        """Expire the deliveries' leases now, so they are delivered again."""
        self._leases("UPDATE leases SET expires = 0 WHERE name = ? AND seq = ?", deliveries)

    def _leases(self, statement: str, deliveries: Sequence[Delivery[R]]) -> None:
        if not deliveries:
            return
        with self.log._lock, self.log._transaction() as db:
            db.executemany(statement, [(self.name, d.seq) for d in deliveries])

    def lag(self) -> ConsumerLag:
        """Records not yet handed to this consumer, and those handed out but not acked."""
        with self.log._lock:
            return self.log._lag(self.name, self.kind.name)

    def close(self) -> None:
        """Nothing to release: the position is in the file."""
