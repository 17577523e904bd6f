"""A process's local spool of records its region's log could not take, kept durably.

Each spool is one SQLite file (`synchronous=FULL`: a `put` is on disk when it returns) in
a folder shared by the processes of one region, held under an exclusive `flock` for as
long as its process lives. A spool whose process died (kill -9) is unlocked: `orphans()`
claims it, so the next process on the folder replays what it held. Records are stored as
their log message bodies, by tenant; a spool is deleted once it is empty and closed.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Generic

from atlasrec.eventlog.records import Kind, R
from atlasrec.tenancy import Region, Scope

SUFFIX = ".spool"


class RecordSpool(Generic[R]):
    """Records of one kind, waiting for the region's log (first in, first out)."""

    def __init__(self, path: Path, kind: Kind[R], region: Region) -> None:
        self.path = path
        self.kind: Kind[R] = kind
        self.region = region
        self._lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._guard = threading.Lock()  # one connection, used by more than one thread
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spooled "
            "(id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, body BLOB NOT NULL)"
        )

    @classmethod
    def create(cls, folder: Path, kind: Kind[R], region: Region) -> RecordSpool[R]:
        """A new, empty spool of this process in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / f"{uuid.uuid4().hex}{SUFFIX}", kind, region)

    @classmethod
    def orphans(cls, folder: Path, kind: Kind[R], region: Region) -> list[RecordSpool[R]]:
        """The spools in `folder` that no living process holds, claimed by this one."""
        claimed = []
        for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
            try:
                claimed.append(cls(path, kind, region))
            except BlockingIOError:
                continue  # a living process's spool
        return claimed

    def put(self, scope: Scope, records: Sequence[R]) -> None:
        """Keep `records` of the scope's tenant; on disk when this returns."""
        rows = [(scope.tenant_id, r.encode()) for r in records]
        with self._guard, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO spooled (tenant, body) VALUES (?, ?)", rows)

    def oldest(self, limit: int) -> tuple[Scope, list[int], list[R]] | None:
        """Up to `limit` of the oldest tenant's records (with their ids), or None if empty."""
        with self._guard:
            first = self._db.execute("SELECT tenant FROM spooled ORDER BY id LIMIT 1").fetchone()
            if first is None:
                return None
            rows = self._db.execute(
                "SELECT id, body FROM spooled WHERE tenant = ? ORDER BY id LIMIT ?",
                (first[0], limit),
            ).fetchall()
        records = self.kind.decode_many([body for _, body in rows])
        return Scope(first[0], self.region), [row_id for row_id, _ in rows], records

    def remove(self, ids: Sequence[int]) -> None:
        """Forget records the log now holds."""
        with self._guard, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM spooled WHERE id = ?", [(i,) for i in ids])

    def __len__(self) -> int:
        with self._guard:
            (count,) = self._db.execute("SELECT count(*) FROM spooled").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the spool; delete its files if it holds nothing."""
        empty = len(self) == 0
        self._db.close()
        if empty:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        os.close(self._lock)
        if empty:
            self.path.with_suffix(".lock").unlink(missing_ok=True)
