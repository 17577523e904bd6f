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
- **Ingested files.** Rows of ingested CSV files (`atlasrec.ingest`) have no log sequence
  number: their `seq` is `INGESTED_SEQ` (-1) and their `event_id` is derived from the natural
  key (user, item, ts, event). They live in their own files (`ingest-<file sha>-<part>`),
  which compaction leaves alone, so sequence-number idempotence and compaction of logged
  events are unchanged. A file's partitions are published together through a journal
  (`.journal-*.json`, `atlasrec.offline_ingest`): files a pending journal names are invisible
  to readers until it is removed, and `sweep()` rolls a crashed publish forward.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
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
        ("request_id", pa.string()),
        ("position", pa.int16()),
    ]
)
"""`request_id` and `position`: the served recommendation an event responds to (null when
none; files written before they existed read as null)."""
REPLACES = b"atlasrec.replaces"
SEQ_RANGE = b"atlasrec.seq_range"
TMP = ".tmp-"
LOCK = ".lock"
INGEST = "ingest-"
INGESTED_SEQ = -1
JOURNAL = ".journal-"
STAGE = f"{TMP}ingest-"
INGEST_LOCK = ".ingest.lock"
COMPACT_MIN_FILES = 8
SEQ_CACHE_FILES = 4_096
DAY_S = 86_400


@dataclass(frozen=True)
class OfflineStats:
    """What the store holds for a tenant."""

    files: int
    rows: int
    bytes: int
    partitions: int
    ingested: int = 0


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
        days = table["ts"].to_numpy() // DAY_S
        written = 0
        unique = np.unique(days)
        for day in unique:
            part = table if unique.size == 1 else table.filter(pa.array(days == day))
            written += self._write_partition(self.folder / partition_name(int(day)), part)
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
        pending = pending_by_partition(self.folder)  # the journals read once, not per partition
        return [
            f for part in self.partitions() for f in live_files(part, pending.get(part.name, set()))
        ]

    def ingested_files(self) -> list[Path]:
        """The live files of ingested CSV files (rows without a sequence number)."""
        return [f for f in self.files() if f.name.startswith(INGEST)]

    @contextmanager
    def ingest_lock(self, *, wait: bool = True) -> Iterator[bool]:
        """The tenant's ingest lock (one file ingest at a time); yields whether it is held."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / INGEST_LOCK, "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

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
            ingested=sum(_footer(f).num_rows for f in files if f.name.startswith(INGEST)),
        )

    def snapshot(self) -> str:
        """Identifies what is stored: a hash over the live files' names and sizes."""
        return files_snapshot(self.files())

    def read_table(
        self,
        columns: Sequence[str],
        *,
        files: Sequence[Path] | None = None,
        where: ds.Expression | None = None,
    ) -> pa.Table:
        """The live rows' `columns` (of `files`, default all; rows matching `where`).

        `user_key`, `item_id` and `event` come dictionary-encoded.
        """
        files = self.files() if files is None else files
        if not files:
            return SCHEMA.empty_table().select(list(columns))
        encoded = ds.ParquetReadOptions(dictionary_columns={"user_key", "item_id", "event"})
        fmt = ds.ParquetFileFormat(read_options=encoded)
        dataset = ds.dataset([str(f) for f in files], format=fmt, schema=SCHEMA)
        return dataset.to_table(columns=list(columns), filter=where)

    # maintenance --------------------------------------------------------------------------

    def compact(self, *, min_files: int = COMPACT_MIN_FILES) -> Compaction:
        """Merge each partition with at least `min_files` live files."""
        done = Compaction(0, 0, 0, 0)
        for part in self.partitions():
            with _locked(part):
                _sweep(part)  # a crashed compaction's inputs go before anything else
                files = [f for f in live_files(part) if not f.name.startswith(INGEST)]
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
        """Delete temporary files and files replaced by a compaction; how many were deleted.

        First, unless an ingest is running, roll pending ingest journals forward and delete
        abandoned ingest staging folders.
        """
        deleted = 0
        if self.folder.is_dir():
            with self.ingest_lock(wait=False) as held:
                if held:
                    deleted += roll_forward(self.folder)
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
            pa.array([e.request_id for e in events], pa.string()),
            pa.array([e.position for e in events], pa.int16()),
        ],
        schema=SCHEMA,
    )


def partition_name(day: int) -> str:
    """The partition folder of a UTC day (days since the epoch): `date=YYYY-MM-DD`."""
    return f"date={np.datetime_as_string(np.datetime64(day, 'D'))}"


def files_snapshot(files: Sequence[Path]) -> str:
    """A hash over files' partitions, names and sizes (`TenantOffline.snapshot`'s rule)."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.parent.name}/{f.name}:{f.stat().st_size};".encode())
    return digest.hexdigest()


def ingested_sha(path: Path) -> str | None:
    """The first 32 hex digits of the source file's sha256, for an ingested file's Parquet."""
    return path.name[len(INGEST) : len(INGEST) + 32] if path.name.startswith(INGEST) else None


def live_files(folder: Path, pending: set[str] | None = None) -> list[Path]:
    """A partition's committed files, less those a compaction or a pending journal hides.

    Hidden: files that a present compacted file replaces and files a pending ingest journal
    names (published, not yet visible; `pending`: those names, when already read).
    """
    files = sorted(f for f in folder.glob("*.parquet") if not f.name.startswith(TMP))
    replaced = set(pending_names(folder) if pending is None else pending)
    for f in files:
        replaced.update(_replaces(f))
    return [f for f in files if f.name not in replaced]


def journals(tenant_folder: Path) -> list[Path]:
    """The tenant's pending ingest journals."""
    return sorted(tenant_folder.glob(f"{JOURNAL}*.json"))


def read_journal(journal: Path) -> list[tuple[str, str]]:
    """A journal's (staged, final) renames, paths relative to the tenant folder."""
    return [(a, b) for a, b in json.loads(journal.read_text())["renames"]]


def pending_names(partition: Path) -> set[str]:
    """Names of the partition's files that a pending ingest journal names (not yet visible)."""
    return pending_by_partition(partition.parent).get(partition.name, set())


def pending_by_partition(tenant_folder: Path) -> dict[str, set[str]]:
    """Per partition, the names of its files that a pending ingest journal names."""
    names: dict[str, set[str]] = {}
    for journal in journals(tenant_folder):
        try:
            renames = read_journal(journal)
        except FileNotFoundError:  # completed meanwhile
            continue
        for _, final in renames:
            names.setdefault(Path(final).parent.name, set()).add(Path(final).name)
    return names


def roll_forward(tenant_folder: Path) -> int:
    """Complete the renames of pending journals, drop them and staging folders left behind.

    The caller holds the tenant's ingest lock. Returns the number of journals and staging
    folders removed.
    """
    removed = 0
    for journal in journals(tenant_folder):
        renames = read_journal(journal)
        apply_renames(tenant_folder, renames)
        journal.unlink()
        removed += 1
    for stage in tenant_folder.glob(f"{STAGE}*"):
        shutil.rmtree(stage, ignore_errors=True)
        removed += 1
    return removed


def apply_renames(tenant_folder: Path, renames: Sequence[tuple[str, str]]) -> None:
    """Rename staged files into place (those already moved are skipped), fsyncing folders."""
    touched: set[Path] = set()
    for staged, final in renames:
        source, target = tenant_folder / staged, tenant_folder / final
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            touched.add(target.parent)
    for folder in (*touched, tenant_folder):
        fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Make a folder's renames durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    fsync_dir(folder)
    return final


def _sweep(part: Path) -> int:
    """Delete a partition's temporary and replaced files (the caller holds its lock)."""
    live = {f.name for f in live_files(part)} | pending_names(part)
    dead = [
        f
        for f in part.iterdir()
        if f.name.startswith(TMP) or (f.suffix == ".parquet" and f.name not in live)
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


@lru_cache(maxsize=SEQ_CACHE_FILES)
def _seq_range(path: Path) -> tuple[int, int] | None:
    raw = (_footer(path).metadata or {}).get(SEQ_RANGE)
    if raw is None:
        return None
    low, high = json.loads(raw)
    return int(low), int(high)


@lru_cache(maxsize=SEQ_CACHE_FILES)
def _replaces(path: Path) -> tuple[str, ...]:
    if not path.name.startswith("compact-"):
        return ()
    raw = (_footer(path).metadata or {}).get(REPLACES)
    return () if raw is None else tuple(json.loads(raw))


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
