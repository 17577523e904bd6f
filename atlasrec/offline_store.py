"""A region's offline store: a tenant's events as Parquet, partitioned by tenant and date.

Laid out as an object store would hold it, under `<root>/<region>/events/`:
`tenant=<tenant_id>/date=<YYYY-MM-DD>/<name>.parquet` (the date of the event, UTC).

- **Immutable files, atomic commits.** A file is written under a temporary name (`.tmp-*`),
  fsynced, then renamed into place: readers see a whole file or none. `sweep()` removes
  temporary files a crash left behind.
- **Idempotent writes.** Every row carries `seq`, its position in the region's event log. A
  write skips the sequence numbers a partition already holds, whoever wrote them and however
  they were batched, so an at-least-once consumer stores each event once. The check and the
  rename run under the partition's lock file (`flock`), so two writer processes never both
  store a sequence number. Each file records its lowest and highest `seq` in its metadata;
  only files whose range overlaps a batch are read (their `seq` column, cached), so a write
  costs O(overlapping files), not O(partition).
- **Compaction.** `compact()` merges a partition's files into one, sorted by (ts, seq), keeping
  the lowest `seq` of a repeated event id. The compacted file names the files it replaces in
  its metadata: readers ignore replaced files from the moment it is renamed in, and the
  inputs are deleted after (by `sweep()` if a crash came first). No reader ever sees a row
  twice or misses one.
- **Bounded reads.** `read_table()` reads the live files' columns through a `pyarrow.dataset`
  with ids dictionary-encoded; no per-row Python objects.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from atlasrec.boundary import Boundary
from atlasrec.eventlog.records import LogEvent
from atlasrec.tenancy import Region, Scope, validate_tenant_id

SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("event_id", pa.string()),
        ("user_key", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.int64()),
        ("event", pa.string()),
        ("weight", pa.float32()),
    ]
)
REPLACES = b"atlasrec.replaces"
SEQ_RANGE = b"atlasrec.seq_range"
TMP = ".tmp-"
LOCK = ".lock"
COMPACT_MIN_FILES = 8
SEQ_CACHE_FILES = 4_096


@dataclass(frozen=True)
class OfflineStats:
    """What the store holds for a tenant."""

    files: int
    rows: int
    bytes: int
    partitions: int


@dataclass(frozen=True)
class Compaction:
    """What one compaction did."""

    partitions: int
    files_in: int
    rows_in: int
    rows_out: int


class OfflineStore:
    """The offline store of one region; hands out tenant views admitted at its boundary."""

    def __init__(self, root: Path, boundary: Boundary) -> None:
        self.region: Region = boundary.region
        self.boundary = boundary
        self.root = root / self.region.value / "events"

    def scoped(self, scope: Scope, *, actor: str = "offline-store") -> TenantOffline:
        """The tenant's part of the store, once the boundary admits the scope (audited)."""
        self.boundary.admit(scope, actor=actor, action="offline_store.open")
        return TenantOffline(scope, self.root / f"tenant={validate_tenant_id(scope.tenant_id)}")


class TenantOffline:
    """One tenant's Parquet partitions."""

    def __init__(self, scope: Scope, folder: Path) -> None:
        self.scope = scope
        self.folder = folder

    # writing ------------------------------------------------------------------------------

    def write(self, seqs: Sequence[int], events: Sequence[LogEvent]) -> int:
        """Store events (at their log sequence numbers) not stored yet; rows newly stored."""
        table = events_table(seqs, events)
        dates = pc.strftime(pc.cast(table["ts"], pa.timestamp("s", tz="UTC")), "%Y-%m-%d")
        written = 0
        for date in pc.unique(dates).to_pylist():
            part = table.filter(pc.equal(dates, date))
            written += self._write_partition(self.folder / f"date={date}", part)
        return written

    def _write_partition(self, folder: Path, table: pa.Table) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            table = _unique_seqs(table)
            low, high = int(pc.min(table["seq"]).as_py()), int(pc.max(table["seq"]).as_py())
            held = _held_seqs(live_files(folder), low, high)
            if held.size:
                table = table.filter(pc.invert(pc.is_in(table["seq"], pa.array(held))))
            if table.num_rows:
                _publish(folder, f"part-{uuid.uuid4().hex}.parquet", table, {})
        return int(table.num_rows)

    # reading ------------------------------------------------------------------------------

    def partitions(self) -> list[Path]:
        """The tenant's date partitions, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.name.startswith("date="))

    def files(self) -> list[Path]:
        """Every live file (committed, not replaced by a compaction), in partition order."""
        return [f for part in self.partitions() for f in live_files(part)]

    def count(self) -> int:
        """Rows stored (from the files' footers)."""
        return sum(_footer(f).num_rows for f in self.files())

    def stats(self) -> OfflineStats:
        """Files, rows, bytes and partitions."""
        files = self.files()
        return OfflineStats(
            files=len(files),
            rows=sum(_footer(f).num_rows for f in files),
            bytes=sum(f.stat().st_size for f in files),
            partitions=len(self.partitions()),
        )

    def snapshot(self) -> str:
        """Identifies what is stored: a hash over the live files' names and sizes."""
        digest = hashlib.sha256()
        for f in self.files():
            digest.update(f"{f.parent.name}/{f.name}:{f.stat().st_size};".encode())
        return digest.hexdigest()

    def read_table(self, columns: Sequence[str]) -> pa.Table:
        """The live rows' `columns`; `user_key`, `item_id` and `event` dictionary-encoded."""
        files = self.files()
        if not files:
            return SCHEMA.empty_table().select(list(columns))
        encoded = ds.ParquetReadOptions(dictionary_columns={"user_key", "item_id", "event"})
        fmt = ds.ParquetFileFormat(read_options=encoded)
        return ds.dataset([str(f) for f in files], format=fmt).to_table(columns=list(columns))

    # maintenance --------------------------------------------------------------------------

    def compact(self, *, min_files: int = COMPACT_MIN_FILES) -> Compaction:
        """Merge each partition with at least `min_files` live files."""
        done = Compaction(0, 0, 0, 0)
        for part in self.partitions():
            with _locked(part):
                _sweep(part)  # a crashed compaction's inputs go before anything else
                files = live_files(part)
                if len(files) >= min_files:
                    rows_in, rows_out = _compact(part, files)
                    done = Compaction(
                        done.partitions + 1,
                        done.files_in + len(files),
                        done.rows_in + rows_in,
                        done.rows_out + rows_out,
                    )
        self.sweep()
        return done

    def sweep(self) -> int:
        """Delete temporary files and files replaced by a compaction; how many were deleted."""
        deleted = 0
        for part in self.partitions():
            with _locked(part):
                deleted += _sweep(part)
        return deleted


def events_table(seqs: Sequence[int], events: Sequence[LogEvent]) -> pa.Table:
    """Events as a table in the store's schema."""
    return pa.table(
        [
            pa.array(seqs, pa.int64()),
            pa.array([e.event_id for e in events], pa.string()),
            pa.array([e.user_key for e in events], pa.string()),
            pa.array([e.item_id for e in events], pa.string()),
            pa.array([e.ts for e in events], pa.int64()),
            pa.array([e.event for e in events], pa.string()),
            pa.array([e.weight for e in events], pa.float32()),
        ],
        schema=SCHEMA,
    )


def live_files(folder: Path) -> list[Path]:
    """A partition's committed files minus those a present compacted file replaces."""
    files = sorted(f for f in folder.glob("*.parquet") if not f.name.startswith(TMP))
    replaced: set[str] = set()
    for f in files:
        replaced.update(_replaces(f))
    return [f for f in files if f.name not in replaced]


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """The partition's lock (an exclusive `flock`), across threads and processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _publish(folder: Path, name: str, table: pa.Table, metadata: dict[bytes, bytes]) -> Path:
    """Write `table` under a temporary name, fsync, rename into place (the commit)."""
    seq = table["seq"]
    meta = {SEQ_RANGE: json.dumps([pc.min(seq).as_py(), pc.max(seq).as_py()]).encode()}
    table = table.replace_schema_metadata({**meta, **metadata})
    tmp = folder / f"{TMP}{name}"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    final = folder / name
    os.replace(tmp, final)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def _sweep(part: Path) -> int:
    """Delete a partition's temporary and replaced files (the caller holds its lock)."""
    live = set(live_files(part))
    dead = [
        f
        for f in part.iterdir()
        if f.name.startswith(TMP) or (f.suffix == ".parquet" and f not in live)
    ]
    for f in dead:
        f.unlink(missing_ok=True)
    return len(dead)


def _unique_seqs(table: pa.Table) -> pa.Table:
    """The batch without repeats of a sequence number (the first kept)."""
    seqs = table["seq"].to_numpy()
    _, first = np.unique(seqs, return_index=True)
    return table if first.size == seqs.size else table.take(np.sort(first))


def _held_seqs(files: list[Path], low: int, high: int) -> np.ndarray:
    """The sequence numbers in [low, high] already stored in `files`."""
    held = [
        _seqs(f) for f in files if (r := _seq_range(f)) is None or (r[0] <= high and r[1] >= low)
    ]
    return np.concatenate(held) if held else np.empty(0, np.int64)


@lru_cache(maxsize=SEQ_CACHE_FILES)
def _seqs(path: Path) -> np.ndarray:
    """A file's `seq` column (files are immutable: cached by path)."""
    seqs: np.ndarray = pq.read_table(path, columns=["seq"])["seq"].to_numpy()
    return seqs


@lru_cache(maxsize=SEQ_CACHE_FILES)
def _footer(path: Path) -> pq.FileMetaData:
    return pq.read_metadata(path)


def _seq_range(path: Path) -> tuple[int, int] | None:
    raw = (_footer(path).metadata or {}).get(SEQ_RANGE)
    if raw is None:
        return None
    low, high = json.loads(raw)
    return int(low), int(high)


def _replaces(path: Path) -> list[str]:
    if not path.name.startswith("compact-"):
        return []
    raw = (_footer(path).metadata or {}).get(REPLACES)
    return [] if raw is None else list(json.loads(raw))


def _compact(part: Path, files: list[Path]) -> tuple[int, int]:
    """Merge `files` into one compacted file (lowest seq of a repeated event id kept)."""
    table = pa.concat_tables(pq.read_table(f, schema=SCHEMA) for f in files)
    rows_in = table.num_rows
    table = table.sort_by([("event_id", "ascending"), ("seq", "ascending")])
    ids = table["event_id"].to_numpy(zero_copy_only=False)
    keep = np.ones(len(ids), dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    table = table.filter(pa.array(keep)).sort_by([("ts", "ascending"), ("seq", "ascending")])
    names = json.dumps([f.name for f in files]).encode()
    _publish(part, f"compact-{uuid.uuid4().hex}.parquet", table, {REPLACES: names})
    for f in files:
        f.unlink(missing_ok=True)
    return rows_in, int(table.num_rows)
