"""interactions.csv -> validated, pseudonymised Arrow tables in the offline store's schema.

The file is streamed with pyarrow's CSV reader in blocks of `BLOCK_BYTES`, every column read
as a string, then checked and converted a whole block at a time with `pyarrow.compute` and
numpy: no Python code runs per row. Per distinct value of a block only: the pseudonym of a
user id (the tenant's HMAC key; the pseudonymiser caches). Item ids are checked against the
tenant's catalog ids, read once (memory O(catalog), not O(file)). `event_id` is a 128-bit
hash of (user key, item, ts, event) computed with numpy, so a row ingested twice
(overlapping files) has the same id and is stored once.

Errors name the first bad row: its index is found with vectorised masks, and its line number
by re-reading the file with the `csv` module (`rows.line_of`, exact with quoted newlines and
empty lines; this runs only when a file is refused). Rows the CSV reader itself refuses
(field counts, encoding) are located the same way (`rows.first_row_error`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from atlasrec.ingest.rows import (
    MAX_EVENT_LEN,
    MAX_ID_LEN,
    MAX_TS,
    MIN_TS,
    NOT_IN_IDS,
    Rejected,
    first_row_error,
    header,
    line_of,
)
from atlasrec.offline_store import INGESTED_SEQ, SCHEMA

BLOCK_BYTES = 4 << 20
REQUIRED = ("user_id", "item_id", "timestamp")
COLUMNS = (*REQUIRED, "event", "weight")
DEFAULT_EVENT = "interaction"
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_NON_FINITE = r"^[+-]?(nan|inf|infinity)$"
_ISO = (
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?"
    r"(Z|[+-]\d{2}(:?\d{2})?)?)?$"
)
_ZONE = r"[T ].*(Z|[+-]\d{2}(:?\d{2})?)$"
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_LANES = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F)

Pseudonymise = Callable[[str], str]


class _Bad(Exception):
    def __init__(self, index: int, field: str | None, reason: str) -> None:
        self.index, self.field, self.reason = index, field, reason


def read_interactions(
    path: Path, pseudonymise: Pseudonymise, catalog: Callable[[], pa.Array]
) -> Iterator[pa.Table]:
    """The file's rows in blocks, as tables in the offline store's schema (`seq` -1).

    `catalog` returns the tenant's item ids (called once, after the header is checked).
    Raises `Rejected` (line, field, reason) at the first bad row.
    """
    raw = header(path, REQUIRED, COLUMNS)
    names = [h.strip().lower() for h in raw]
    items = catalog()
    record = 0
    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(raw, pa.string())),
        )
        for batch in reader:
            try:
                yield _convert(
                    pa.Table.from_batches([batch]).rename_columns(names), pseudonymise, items
                )
            except _Bad as bad:
                raise Rejected(line_of(path, record + bad.index), bad.field, bad.reason) from None
            record += batch.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        first_row_error(path, REQUIRED, COLUMNS)
        raise Rejected(None, None, f"malformed CSV: {exc}") from None


class _Checks:
    """The first failing (row, check) of a block; earlier checks win on the same row."""

    def __init__(self) -> None:
        self.first: _Bad | None = None

    def add(self, mask: pa.Array | np.ndarray, field: str, reason: Callable[[int], str]) -> None:
        mask = pa.array(mask) if isinstance(mask, np.ndarray) else mask
        index = pc.index(mask, pa.scalar(True)).as_py()
        if index >= 0 and (self.first is None or index < self.first.index):
            self.first = _Bad(index, field, reason(index))

    def raise_first(self) -> None:
        if self.first is not None:
            raise self.first


def _convert(table: pa.Table, pseudonymise: Pseudonymise, catalog: pa.Array) -> pa.Table:
    n = table.num_rows
    checks = _Checks()
    for name in _with_nul(table):
        checks.add(
            pc.match_substring(table[name].combine_chunks(), "\x00"),
            name,
            lambda _: "contains a NUL byte",
        )
    user = _identifier(table, "user_id", checks)
    event = pa.array(np.full(n, DEFAULT_EVENT))
    if "event" in table.column_names:
        given = pc.utf8_trim_whitespace(table["event"].combine_chunks())
        checks.add(
            pc.greater(pc.utf8_length(given), MAX_EVENT_LEN),
            "event",
            lambda _: f"is longer than {MAX_EVENT_LEN} characters",
        )
        event = pc.if_else(pc.equal(given, ""), DEFAULT_EVENT, given)
    item = _identifier(table, "item_id", checks)
    ts = _timestamps(pc.utf8_trim_whitespace(table["timestamp"].combine_chunks()), checks)
    weight = (
        _weights(table["weight"].combine_chunks(), checks)
        if "weight" in table.column_names
        else np.ones(n, np.float32)
    )
    checks.add(
        pc.invert(pc.is_in(item, value_set=catalog)),
        "item_id",
        lambda i: f"{item[i].as_py()!r} is not in the tenant's catalog",
    )
    checks.raise_first()
    users = pc.dictionary_encode(user)
    keys = pa.array([pseudonymise(u) for u in users.dictionary.to_pylist()], pa.string())
    user_key = keys.take(users.indices)
    return pa.table(
        [
            pa.array(np.full(n, INGESTED_SEQ, np.int64)),
            event_ids(user_key, item, ts, event),
            user_key,
            item,
            pa.array(ts),
            event,
            pa.array(weight),
            pa.nulls(n, pa.string()),  # history responds to no served request
            pa.nulls(n, pa.int16()),
        ],
        schema=SCHEMA,
    )


def _with_nul(table: pa.Table) -> list[str]:
    """The columns whose bytes contain a NUL (a scan of the data buffers)."""
    found = []
    for name in table.column_names:
        for chunk in table[name].chunks:
            data = chunk.buffers()[2]
            if data is not None and data.size and np.frombuffer(data, np.uint8).min() == 0:
                found.append(name)
                break
    return found


def _identifier(table: pa.Table, field: str, checks: _Checks) -> pa.Array:
    value = pc.utf8_trim_whitespace(table[field].combine_chunks())
    checks.add(pc.equal(value, ""), field, lambda _: "is empty")
    checks.add(
        pc.greater(pc.utf8_length(value), MAX_ID_LEN),
        field,
        lambda _: f"is longer than {MAX_ID_LEN} characters",
    )
    checks.add(
        pc.match_substring_regex(value, f"[{NOT_IN_IDS}]"),
        field,
        lambda _: "contains control, bidirectional or byte-order characters",
    )
    return value


def _timestamps(value: pa.Array, checks: _Checks) -> np.ndarray:
    """Epoch seconds from epoch numbers or ISO 8601 (UTC if naive), within 1970..2100."""
    n = len(value)
    empty = pc.equal(value, "").to_numpy(zero_copy_only=False)
    numeric = pc.or_(
        pc.match_substring_regex(value, _NUMBER),
        pc.match_substring_regex(value, _NON_FINITE, ignore_case=True),
    ).to_numpy(zero_copy_only=False)
    iso = pc.match_substring_regex(value, _ISO).to_numpy(zero_copy_only=False)
    zoned = iso & pc.match_substring_regex(value, _ZONE).to_numpy(zero_copy_only=False)
    bad = ~(empty | numeric | iso)
    seconds = np.full(n, np.nan)
    for mask, to, scale in (
        (numeric, pa.float64(), 1.0),
        (iso & ~zoned, pa.timestamp("us"), 1e-6),
        (zoned, pa.timestamp("us", tz="UTC"), 1e-6),
    ):
        rows = np.flatnonzero(mask)
        parsed, failed = _cast(value.take(pa.array(rows)), to)
        seconds[rows[: len(parsed)]] = parsed * scale
        if failed is not None:
            bad[rows[failed]] = True
    checks.add(empty, "timestamp", lambda _: "is empty")
    checks.add(
        bad, "timestamp", lambda i: f"{value[i].as_py()!r} is neither epoch seconds nor ISO 8601"
    )
    with np.errstate(invalid="ignore"):
        outside = ~(empty | bad) & ~((seconds >= MIN_TS) & (seconds < MAX_TS))
    checks.add(outside, "timestamp", lambda i: f"{value[i].as_py()!r} is outside 1970..2100")
    return np.where(np.isfinite(seconds), seconds, 0).astype(np.int64)


def _weights(raw: pa.Array, checks: _Checks) -> np.ndarray:
    """Finite float32 weights; 1.0 where empty."""
    value = pc.utf8_trim_whitespace(raw)
    numeric = pc.match_substring_regex(value, _NUMBER).to_numpy(zero_copy_only=False)
    special = pc.match_substring_regex(value, _NON_FINITE, ignore_case=True)
    not_finite = special.to_numpy(zero_copy_only=False)
    not_number = ~(numeric | not_finite | pc.equal(value, "").to_numpy(zero_copy_only=False))
    weights = np.ones(len(value), np.float64)
    rows = np.flatnonzero(numeric)
    parsed, failed = _cast(value.take(pa.array(rows)), pa.float64())
    weights[rows[: len(parsed)]] = parsed
    if failed is not None:
        not_number[rows[failed]] = True
    with np.errstate(over="ignore"):
        small = weights.astype(np.float32)
    not_finite |= ~np.isfinite(small)
    checks.add(not_number, "weight", lambda i: f"{raw[i].as_py()!r} is not a number")
    checks.add(not_finite, "weight", lambda i: f"{raw[i].as_py()!r} is not finite")
    return small


def _cast(value: pa.Array, to: pa.DataType) -> tuple[np.ndarray, int | None]:
    """`value` cast to `to` as numbers, and the position of the first value that fails.

    On a failure, only the values before it are returned (found by bisection: a few more
    casts, and only when the file is refused anyway).
    """
    try:
        return _numbers(pc.cast(value, to)), None
    except pa.ArrowInvalid:
        pass
    good, bad = 0, len(value)  # value[:good] casts; value[:bad] does not
    while bad - good > 1:
        mid = (good + bad) // 2
        try:
            pc.cast(value.slice(0, mid), to)
            good = mid
        except pa.ArrowInvalid:
            bad = mid
    return _numbers(pc.cast(value.slice(0, bad - 1), to)), bad - 1


def _numbers(values: pa.Array) -> np.ndarray:
    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.int64())
    numbers: np.ndarray = values.to_numpy(zero_copy_only=False).astype(np.float64)
    return numbers


def event_ids(user_key: pa.Array, item: pa.Array, ts: np.ndarray, event: pa.Array) -> pa.Array:
    """A 128-bit hash of each row's natural key (user key, item, ts, event), as 32 hex digits."""
    lanes = []
    parts = [pc.dictionary_encode(a) for a in (user_key, item, event)]
    hashed = [(_string_hash(p.dictionary), p.indices.to_numpy()) for p in parts]
    stamp = ts.astype(np.int64).view(np.uint64)
    for lane, seed in enumerate(_LANES):
        (users, u), (items, i), (events, e) = hashed
        h = _mix(users[lane][u] + np.uint64(seed))
        h = _mix(h ^ items[lane][i])
        h = _mix(h ^ stamp)
        lanes.append(_mix(h ^ events[lane][e]))
    return _hex(lanes[0], lanes[1])


def _string_hash(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit hashes of each string (polynomial over its UTF-8 bytes, then mixed)."""
    strings = pa.concat_arrays([strings.cast(pa.string())])  # offset 0
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], np.int32)[: n + 1]
    data = strings.buffers()[2]
    raw = (
        np.frombuffer(data, np.uint8)[: offsets[-1]] if data is not None else np.empty(0, np.uint8)
    )
    lengths = np.diff(offsets)
    position = np.arange(len(raw)) - np.repeat(offsets[:-1], lengths)
    byte = raw.astype(np.uint64) + np.uint64(1)
    out = []
    for seed in _LANES:
        powers = np.cumprod(np.full(max(int(lengths.max(initial=0)), 1), seed, np.uint64))
        terms = np.append(byte * powers[position], np.uint64(0))
        sums = np.add.reduceat(terms, np.minimum(offsets[:-1], len(raw))) if n else terms[:0]
        sums = np.where(lengths > 0, sums, np.uint64(0))
        out.append(_mix(sums ^ (lengths.astype(np.uint64) * np.uint64(seed))))
    return out[0], out[1]


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (wrapping uint64 arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = z ^ (z >> np.uint64(31))
    return mixed


def _hex(high: np.ndarray, low: np.ndarray) -> pa.Array:
    n = len(high)
    words = np.empty((n, 2), ">u8")
    words[:, 0], words[:, 1] = high, low
    octets = words.view(np.uint8).reshape(n, 16)
    digits = np.empty((n, 32), np.uint8)
    digits[:, 0::2], digits[:, 1::2] = _HEX[octets >> 4], _HEX[octets & 15]
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(digits.tobytes()))
