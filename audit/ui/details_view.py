"""A record's details as key/value views for the audit log (rendered by `_details.html`).

Nested dicts become nested key/value lists, lists of plain values comma-separated lists;
numbers are formatted for reading; long ids (hashes) are shortened, the full value in a
`title`; text breaks only after separators (`/`, `:`, `,`). Values that name a served
request link to its lineage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from audit.lineage import REQUEST_ID_PATTERN
from privacy.epsilon_terms import STANDALONE, TOTAL_AFTER, Term

Kind = Literal["empty", "text", "number", "id", "link", "list", "map"]
LINEAGE = "/audit/lineage"
SHORT_ID = 12
LONG_ID = re.compile(r"^[0-9a-f]{24,}$|^[A-Za-z0-9_-]{40,}$")
BREAK_AFTER = "/:,="
"""Where text may break: after these characters."""
REQUEST_KEYS = frozenset({"request_id", "first_request_id", "last_request_id"})
"""Details keys that name a served request (`serving.requests` batches, lineage reads)."""
NOT_SERVED = ("catalog.",)
"""Actions whose `request_id` is an HTTP request of a write, not a served request."""
EPSILON_TERMS: dict[tuple[str, str], Term] = {
    ("dp.charged", "epsilon"): STANDALONE,
    ("dp.charged", "epsilon_total"): TOTAL_AFTER,
    ("federation.round", "epsilon"): STANDALONE,
    ("federation.exported", "contributors"): STANDALONE,
}
"""Which epsilon a record's epsilon field is (`privacy.epsilon_terms`), by action and key."""
LONG_SUBJECT = re.compile(r"^(?P<kind>[a-z_-]+:)(?P<value>[A-Za-z0-9_.-]{24,})$")
"""A subject naming a long id (a version, a hash), shortened on the page."""
REQUEST_SUBJECT = re.compile(r"^(?:request:|served:[a-z0-9_-]+/)(?P<id>[^/]+)$")


@dataclass(frozen=True)
class Value:
    """One value as shown; `kind` says which fields the template reads."""

    kind: Kind
    text: str = ""
    parts: tuple[str, ...] = ()
    """`text` split at its break points (kind `text`); what precedes an `id`."""
    full: str = ""
    """The whole value, in a `title` (kind `id`, `link`)."""
    href: str = ""
    items: tuple[Value, ...] = ()
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class Entry:
    """A key and its value."""

    key: str
    value: Value = field(default_factory=lambda: Value("empty"))
    term: Term | None = None
    """Which epsilon the value is, for an epsilon field."""


def details_view(details: dict[str, Any], action: str) -> tuple[Entry, ...]:
    """The key/value entries of a record's details."""
    links = not action.startswith(NOT_SERVED)
    return tuple(
        Entry(
            str(k),
            _link(v) if links and k in REQUEST_KEYS and _is_request(v) else view(v),
            EPSILON_TERMS.get((action, str(k))),
        )
        for k, v in details.items()
    )


def subject_view(subject: str) -> Value:
    """A record's subject: a link to the lineage where it names a served request."""
    match = REQUEST_SUBJECT.fullmatch(subject)
    if match and _is_request(match["id"]):
        return Value("link", parts=breakable(subject), full=subject, href=lineage_href(match["id"]))
    named = LONG_SUBJECT.fullmatch(subject)
    if named:  # `kind:<long id>`: the id's ends, which tell versions and hashes apart
        value = named["value"]
        return Value("id", f"{value[:8]}…{value[-6:]}", parts=(named["kind"],), full=subject)
    return view(subject)


def lineage_href(request_id: str) -> str:
    """The lineage page of a served request."""
    return f"{LINEAGE}?{urlencode({'request_id': request_id})}"


def view(value: Any) -> Value:
    """Any JSON value as shown."""
    if value is None or value == "" or value == [] or value == {}:
        return Value("empty", "—")
    if isinstance(value, bool):
        return Value("text", parts=("yes" if value else "no",))
    if isinstance(value, int | float):
        return Value("number", number(value))
    if isinstance(value, dict):
        return Value("map", entries=tuple(Entry(str(k), view(v)) for k, v in value.items()))
    if isinstance(value, list):
        return Value("list", items=tuple(view(v) for v in value))
    text = str(value)
    if LONG_ID.fullmatch(text):
        return Value("id", text[:SHORT_ID] + "…", full=text)
    return Value("text", text, parts=breakable(text))


def number(value: float) -> str:
    """A number for reading: thousands separated, floats to 4 significant digits or 2 decimals."""
    if isinstance(value, int):
        return f"{value:,}"
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"


def _is_request(value: Any) -> bool:
    return isinstance(value, str) and REQUEST_ID_PATTERN.fullmatch(value) is not None


def _link(request_id: str) -> Value:
    short = request_id if len(request_id) <= SHORT_ID else request_id[:SHORT_ID] + "…"
    return Value("link", short, parts=(short,), full=request_id, href=lineage_href(request_id))


def breakable(text: str, after: str = BREAK_AFTER) -> tuple[str, ...]:
    """`text` split after each of the characters `after`, where a line may break."""
    return tuple(p for p in re.split(f"(?<=[{re.escape(after)}])", text) if p)
