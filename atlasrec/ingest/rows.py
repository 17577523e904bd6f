"""The ingest files' shared row checks: header, field counts, identifiers, timestamps.

Also the exact locator of errors: `line_of()` re-reads a file with the `csv` module to turn
a record's index into its line number (quoted newlines and empty lines counted), and
`first_row_error()` finds the first row-level problem the vectorised reader could not
place (field counts, encoding, malformed quoting).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

MAX_ID_LEN = 256
MAX_TEXT_LEN = 20_000
MAX_EVENT_LEN = 32
MIN_TS, MAX_TS = 0, 4_102_444_800  # 1970-01-01 .. 2100-01-01
NOT_IN_IDS = "\\x00-\\x1f\\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff"
"""What an identifier may not hold (a regex character range): control characters, the
bidirectional controls that make an id display as another, and the byte-order mark."""
ID_PATTERN = f"^[^{NOT_IN_IDS}]*[^\\s{NOT_IN_IDS}][^{NOT_IN_IDS}]*$"
"""An identifier: something other than whitespace, and nothing of `NOT_IN_IDS`."""
_NOT_ID = re.compile(f"[{NOT_IN_IDS}]")

csv.field_size_limit(1 << 20)


class Rejected(Exception):
    """A file refused at `line` (1 = header) and `field`, for `reason`."""

    def __init__(self, line: int | None, field: str | None, reason: str) -> None:
        self.line, self.field, self.reason = line, field, reason


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rows(
    path: Path, required: tuple[str, ...], allowed: tuple[str, ...] | None
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) pairs; checks the header and each row's field count."""
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise Rejected(None, None, f"cannot read file: {exc.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise Rejected(1, None, "file is empty (expected a header row)")
            columns = [h.strip().lower() for h in header]
            for name in columns:
                if not name:
                    raise Rejected(1, None, "header has an empty column name")
                if columns.count(name) > 1:
                    raise Rejected(1, name, "column appears more than once in the header")
                if allowed is not None and name not in allowed:
                    raise Rejected(1, name, f"unknown column (allowed: {', '.join(allowed)})")
            missing = [c for c in required if c not in columns]
            if missing:
                raise Rejected(1, missing[0], f"required column missing from header {header}")
            line = reader.line_num
            for values in reader:
                start, line = line + 1, reader.line_num
                if not values or values == [""]:
                    continue
                if len(values) != len(columns):
                    raise Rejected(
                        start, None, f"expected {len(columns)} fields, found {len(values)}"
                    )
                row = dict(zip(columns, values, strict=True))
                for name, value in row.items():
                    if "\x00" in value:
                        raise Rejected(start, name, "contains a NUL byte")
                yield start, row
        except UnicodeDecodeError:
            raise Rejected(_bad_utf8_line(path), None, "not valid UTF-8") from None
        except csv.Error as exc:
            raise Rejected(reader.line_num, None, f"malformed CSV: {exc}") from None


def identifier(value: str, line: int, field: str) -> str:
    """`value` stripped; refused if empty, too long, or with control or bidi characters."""
    value = value.strip()
    if not value:
        raise Rejected(line, field, "is empty")
    if len(value) > MAX_ID_LEN:
        raise Rejected(line, field, f"is longer than {MAX_ID_LEN} characters")
    if _NOT_ID.search(value):
        raise Rejected(line, field, "contains control, bidirectional or byte-order characters")
    return value


def text(value: str, line: int, field: str, *, required: bool) -> str | None:
    """`value` stripped (None if empty and not required); refused if too long."""
    value = value.strip()
    if not value:
        if required:
            raise Rejected(line, field, "is empty")
        return None
    if len(value) > MAX_TEXT_LEN:
        raise Rejected(line, field, f"is longer than {MAX_TEXT_LEN} characters")
    return value


def header(path: Path, required: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    """The file's raw column names (its first record), once the header is checked."""
    for _ in rows(path, required, allowed):
        break
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh))


def line_of(path: Path, record: int) -> int:
    """The line on which data record `record` (0-based, empty lines skipped) starts."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        next(reader)
        line, seen = reader.line_num, -1
        for values in reader:
            start, line = line + 1, reader.line_num
            if not values or values == [""]:
                continue
            seen += 1
            if seen == record:
                return start
    return line + 1


def first_row_error(path: Path, required: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    """Raise `Rejected` at the first row the `csv` module refuses (field count, NUL, UTF-8)."""
    for _ in rows(path, required, allowed):
        pass


def _bad_utf8_line(path: Path) -> int:
    """The line of the file's first byte that is not valid UTF-8 (read in blocks)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return lines + block.count(b"\n", 0, max(exc.start, 0))
            lines += block.count(b"\n")
    return lines
