"""An ingested file's rows, staged in the offline store and published all at once.

`IngestStage` buffers a file's validated rows by date partition (spilling to Parquet under
`<tenant folder>/.tmp-ingest-<id>/` past `SPILL_BYTES`), then `finish()` writes each
partition's final files into the staging folder, dropping rows whose `event_id` (a hash of
the natural key) repeats within the file or is already stored by another ingested file.
Nothing is visible until `publish()`:

1. write a journal listing the staged -> final renames, fsync, rename it into place: the
   point of no return (readers ignore files a pending journal names);
2. rename the staged files into their partitions;
3. the caller commits its database transaction (the ingest batch row);
4. `complete()` deletes the journal: the rows become visible.

A crash before 1 leaves only the staging folder (deleted by `sweep()`); after 1, `sweep()` or
the next ingest rolls the journal forward. Final names are deterministic per (file sha256,
partition, part), so ingesting the file again after a crash rewrites the same files.
Memory: one block's buffers (up to `SPILL_BYTES`) plus, while finishing a partition, the
ids of its rows (dedupe); never the whole file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atlasrec.offline_store import (
    DAY_S,
    INGEST,
    JOURNAL,
    SCHEMA,
    SEQ_RANGE,
    STAGE,
    TMP,
    TenantOffline,
    apply_renames,
    fsync_dir,
    live_files,
    partition_name,
)

SPILL_BYTES = 64 << 20
FINISH_THREADS = 2
FILE_ROWS = 2_000_000
_FINAL_SCHEMA = SCHEMA.with_metadata({SEQ_RANGE: b"[-1, -1]"})


class IngestStage:
    """One file's rows on their way into the tenant's partitions (see the module doc)."""

    def __init__(self, offline: TenantOffline, sha256: str) -> None:
        self.offline = offline
        self.tenant = offline.folder
        self.prefix = f"{INGEST}{sha256[:32]}-"
        self.folder = self.tenant / f"{STAGE}{uuid.uuid4().hex}"
        self.journal = self.tenant / f"{JOURNAL}{self.folder.name}.json"
        self._buffers: dict[int, list[pa.Table]] = {}
        self._spilled: dict[int, list[Path]] = {}
        self._bytes = 0
        self._renames: list[tuple[str, str]] = []
        self.published = False
        self.folder.mkdir(parents=True)

    def add(self, table: pa.Table) -> None:
        """Buffer validated rows (in the store's schema) by their UTC day."""
        if not table.num_rows:
            return
        days = table["ts"].to_numpy() // DAY_S
        unique, inverse, counts = np.unique(days, return_inverse=True, return_counts=True)
        table = table.take(np.argsort(inverse, kind="stable"))
        start = 0
        for day, n in zip(unique.tolist(), counts.tolist(), strict=True):
            self._buffers.setdefault(day, []).append(table.slice(start, n))
            start += n
        self._bytes += table.nbytes
        if self._bytes > SPILL_BYTES:
            self._spill()

    def _spill(self) -> None:
        spill = self.folder / "spill"
        spill.mkdir(exist_ok=True)
        for day, tables in self._buffers.items():
            pieces = self._spilled.setdefault(day, [])
            path = spill / f"{day}-{len(pieces)}.parquet"
            pq.write_table(pa.concat_tables(tables), path, compression="lz4")
            pieces.append(path)
        self._buffers, self._bytes = {}, 0

    def finish(self) -> int:
        """Write each partition's final files into the staging folder; rows newly stored."""
        days = sorted(set(self._buffers) | set(self._spilled))
        pieces = {d: [*self._spilled.get(d, []), *self._buffers.get(d, [])] for d in days}
        self._buffers = {}
        with ThreadPoolExecutor(max_workers=FINISH_THREADS) as pool:  # Arrow frees the GIL
            written = sum(pool.map(lambda d: self._finish_partition(d, pieces.pop(d)), days))
        self._renames.sort()
        shutil.rmtree(self.folder / "spill", ignore_errors=True)
        return written

    def _finish_partition(self, day: int, pieces: list[pa.Table | Path]) -> int:
        partition = partition_name(day)
        stored = [
            f
            for f in live_files(self.tenant / partition)
            if f.name.startswith(INGEST) and not f.name.startswith(self.prefix)
        ]
        seen: list[pa.Array] = [
            c for f in stored for c in pq.read_table(f, columns=["event_id"])["event_id"].chunks
        ]
        writer: pq.ParquetWriter | None = None
        part = rows_in_file = written = 0
        (self.folder / partition).mkdir(exist_ok=True)
        for piece in pieces:
            table = pq.read_table(piece) if isinstance(piece, Path) else piece
            table = _first_of_each_id(table)
            if seen:
                held = pa.concat_arrays(seen)
                table = table.filter(pc.invert(pc.is_in(table["event_id"], value_set=held)))
            seen.extend(table["event_id"].chunks)
            for start in range(0, table.num_rows, FILE_ROWS):
                if writer is None or rows_in_file >= FILE_ROWS:
                    if writer is not None:
                        writer.close()
                        part += 1
                    writer, rows_in_file = self._writer(partition, part), 0
                chunk = table.slice(start, FILE_ROWS - rows_in_file)
                writer.write_table(chunk.cast(_FINAL_SCHEMA))
                rows_in_file += chunk.num_rows
                written += chunk.num_rows
        if writer is not None:
            writer.close()
        return written

    def _writer(self, partition: str, part: int) -> pq.ParquetWriter:
        name = f"{self.prefix}{part:04d}.parquet"
        staged = self.folder / partition / name
        self._renames.append((str(staged.relative_to(self.tenant)), f"{partition}/{name}"))
        return pq.ParquetWriter(
            staged,
            _FINAL_SCHEMA,
            compression="zstd",
            use_dictionary=["user_key", "item_id", "event"],  # event ids are unique
        )

    def publish(self) -> None:
        """Journal the renames (the point of no return), then move the files into place."""
        with ThreadPoolExecutor(max_workers=8) as pool:  # the disk overlaps them
            list(pool.map(_fsync, [self.tenant / staged for staged, _ in self._renames]))
        tmp = self.tenant / f"{TMP}{self.journal.name}"
        with open(tmp, "w") as fh:
            json.dump({"renames": self._renames}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.journal)
        fsync_dir(self.tenant)
        self.published = True
        apply_renames(self.tenant, self._renames)

    def complete(self) -> None:
        """Make the published rows visible: drop the journal and the staging folder."""
        self.journal.unlink(missing_ok=True)
        fsync_dir(self.tenant)
        shutil.rmtree(self.folder, ignore_errors=True)

    def discard(self) -> None:
        """Forget everything staged (before `publish`)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _first_of_each_id(table: pa.Table) -> pa.Table:
    """The table without rows whose `event_id` appeared earlier in it."""
    if table.num_rows < 2:
        return table
    indexed = table.select(["event_id"]).append_column("i", pa.array(np.arange(table.num_rows)))
    first = indexed.group_by("event_id", use_threads=False).aggregate([("i", "min")])
    if first.num_rows == table.num_rows:
        return table
    return table.take(np.sort(first["i_min"].to_numpy()))
