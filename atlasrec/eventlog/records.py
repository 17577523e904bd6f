"""What the event log holds, one message each, and their subjects.

A region's log holds three kinds of record under one sequence: interaction events
(`LogEvent`, subjects `<root>.<region>.events.<tenant>`), served requests' records
(`ServedRecord`, subjects `<root>.<region>.served.<tenant>`) and catalog upserts accepted
while the region database was down (`CatalogRecord`, `<root>.<region>.catalog.<tenant>`).
A consumer reads one kind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic

from typing_extensions import TypeVar

from atlasrec.errors import InvalidInputError
from atlasrec.tenancy import Region, Scope, validate_tenant_id

SUBJECT_ROOT = "atlasrec"


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One accepted interaction; `user_key` is already pseudonymised, never a raw user id."""

    kind: ClassVar[str] = "events"
    event_id: str
    user_key: str
    item_id: str
    ts: int
    event: str
    weight: float
    request_id: str | None = None
    """The served recommendation this event responds to (checked: the tenant's own)."""
    position: int | None = None
    """The item's 0-based position in that recommendation."""

    def feature(self) -> tuple[str, str, float, float]:
        """`(user_key, item_id, weight, ts)`, as the online store records events."""
        return (self.user_key, self.item_id, self.weight, float(self.ts))

    def encode(self) -> bytes:
        """The message body: a compact JSON array."""
        row: list[Any] = [self.event_id, self.user_key, self.item_id, self.ts, self.event]
        row.append(self.weight)
        if self.request_id is not None:  # attributed events only: the rest stay as they were
            row += [self.request_id, self.position]
        return json.dumps(row, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> LogEvent:
        """Inverse of `encode`."""
        return cls.from_row(json.loads(body))

    @classmethod
    def from_row(cls, row: list[Any]) -> LogEvent:
        """An event from its decoded JSON array, each field coerced to its type."""
        event_id, user_key, item_id, ts, event, weight, *served = row
        request_id, position = served if served else (None, None)
        return cls(
            str(event_id),
            str(user_key),
            str(item_id),
            int(ts),
            str(event),
            float(weight),
            None if request_id is None else str(request_id),
            None if position is None else int(position),
        )

    @classmethod
    def decode_many(cls, bodies: Sequence[bytes]) -> list[LogEvent]:
        """`decode` of each body, parsed as one JSON array (one parser call per batch).

        Raises `ValueError` unless every body is exactly one event, so a caller can fall back
        to `decode` per body to find the bad one.
        """
        rows = json.loads(b"[" + b",".join(bodies) + b"]")
        if len(rows) != len(bodies):
            raise ValueError(f"{len(bodies)} messages held {len(rows)} events")
        return [cls.from_row(row) for row in rows]

    @property
    def key(self) -> str:
        """The id the log de-duplicates on, within the tenant and kind."""
        return self.event_id


@dataclass(frozen=True, slots=True)
class ServedRecord:
    """One served recommendation request, as the request log keeps it (`served_requests`)."""

    kind: ClassVar[str] = "served"
    request_id: str
    served_at: datetime
    model_version: str | None
    user_key: str | None
    k: int
    items: tuple[str, ...]
    cold_start: bool
    degraded: tuple[str, ...]
    timings_ms: dict[str, float]
    intent: str
    arm: str = "live"
    shadow_of: str | None = None
    policy_violations: int = 0
    experiment_id: str | None = None
    teams: str | None = None

    @property
    def key(self) -> str:
        """The id the log de-duplicates on: the request's id."""
        return self.request_id

    def encode(self) -> bytes:
        """The message body: a compact JSON object."""
        return json.dumps(
            {**self.row(), "served_at": self.served_at.isoformat()}, separators=(",", ":")
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> ServedRecord:
        """Inverse of `encode`."""
        d = json.loads(body)
        return cls(
            request_id=str(d["request_id"]),
            served_at=datetime.fromisoformat(d["served_at"]),
            model_version=d["model_version"],
            user_key=d["user_key"],
            k=int(d["k"]),
            items=tuple(d["items"]),
            cold_start=bool(d["cold_start"]),
            degraded=tuple(d["degraded"]),
            timings_ms={str(s): float(ms) for s, ms in d["timings_ms"].items()},
            intent=str(d["intent"]),
            arm=str(d.get("arm", "live")),
            shadow_of=d.get("shadow_of"),
            policy_violations=int(d.get("policy_violations", 0)),
            experiment_id=d.get("experiment_id"),
            teams=d.get("teams"),
        )

    @classmethod
    def decode_many(cls, bodies: Sequence[bytes]) -> list[ServedRecord]:
        """`decode` of each body."""
        return [cls.decode(b) for b in bodies]

    def row(self) -> dict[str, Any]:
        """The record's `served_requests` columns (without the tenant)."""
        return {
            "request_id": self.request_id,
            "served_at": self.served_at,
            "model_version": self.model_version,
            "user_key": self.user_key,
            "k": self.k,
            "items": list(self.items),
            "cold_start": self.cold_start,
            "degraded": list(self.degraded),
            "timings_ms": self.timings_ms,
            "intent": self.intent,
            "arm": self.arm,
            "shadow_of": self.shadow_of,
            "policy_violations": self.policy_violations,
            "experiment_id": self.experiment_id,
            "teams": self.teams,
        }


@dataclass(frozen=True, slots=True)
class CatalogRecord:
    """One `PUT /v1/catalog/items` accepted while the region database could not take it.

    `items` are the request's item rows (`item_id`, `title`, `category`, `description`,
    `attributes`); `accepted_at` orders it against other writes of the same items.
    """

    kind: ClassVar[str] = "catalog"
    request_id: str
    accepted_at: datetime
    items: tuple[dict[str, Any], ...]

    @property
    def key(self) -> str:
        """The id the log de-duplicates on: the request's id."""
        return self.request_id

    def encode(self) -> bytes:
        """The message body: a compact JSON object."""
        return json.dumps(
            {
                "request_id": self.request_id,
                "accepted_at": self.accepted_at.isoformat(),
                "items": list(self.items),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> CatalogRecord:
        """Inverse of `encode`."""
        d = json.loads(body)
        return cls(
            request_id=str(d["request_id"]),
            accepted_at=datetime.fromisoformat(d["accepted_at"]),
            items=tuple(dict(item) for item in d["items"]),
        )

    @classmethod
    def decode_many(cls, bodies: Sequence[bytes]) -> list[CatalogRecord]:
        """`decode` of each body."""
        return [cls.decode(b) for b in bodies]


Record = LogEvent | ServedRecord | CatalogRecord
R = TypeVar("R", LogEvent, ServedRecord, CatalogRecord, default=LogEvent)


@dataclass(frozen=True)
class Kind(Generic[R]):
    """A kind of record in the log: its subjects' token and its record type."""

    name: str
    record: type[R]

    def decode(self, body: bytes) -> R:
        """A message body of this kind as its record."""
        return self.record.decode(body)

    def decode_many(self, bodies: Sequence[bytes]) -> list[R]:
        """Message bodies of this kind as records; `ValueError` if any is not one record."""
        return self.record.decode_many(bodies)


EVENTS = Kind("events", LogEvent)
SERVED = Kind("served", ServedRecord)
CATALOG = Kind("catalog", CatalogRecord)
KINDS: tuple[Kind[Any], ...] = (EVENTS, SERVED, CATALOG)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[R]):
    """A record handed to a consumer: its position in the region's log, and its tenant.

    `event` is the record: a `LogEvent` for the events' consumers, a `ServedRecord` for the
    served requests' consumer, a `CatalogRecord` for the deferred catalog writes' consumer.
    """

    seq: int
    tenant_id: str
    event: R
    redelivered: bool = False


@dataclass(frozen=True)
class Appended:
    """The log's answer to one append: a sequence number per event, in input order.

    A duplicate (an event id the log already holds for the tenant) keeps the sequence number
    of its first append; its flag in `duplicate` is set.
    """

    seqs: list[int]
    duplicate: list[bool]

    @property
    def accepted(self) -> int:
        """Events appended by this call."""
        return self.duplicate.count(False)

    @property
    def duplicates(self) -> int:
        """Events already in the log."""
        return self.duplicate.count(True)


def stream_name(region: Region, root: str = SUBJECT_ROOT) -> str:
    """The region's stream (JetStream stream names: no dots)."""
    return f"{root.upper()}_EVENTS_{region.value.upper()}"


def region_subjects(region: Region, root: str = SUBJECT_ROOT, kind: str = "events") -> str:
    """Every subject of the region's records of kind `kind`."""
    return f"{root}.{region.value}.{kind}.*"


def subject(scope: Scope, root: str = SUBJECT_ROOT, kind: str = "events") -> str:
    """The subject of one tenant's records of `kind`, built only from an admitted scope."""
    return f"{root}.{scope.region.value}.{kind}.{validate_tenant_id(scope.tenant_id)}"


def message_id(tenant_id: str, record: Record) -> str:
    """The id the log de-duplicates a message on (events keep their `<tenant>:<id>`).

    A served record's id starts with `served/`, which no tenant id can: it never equals an
    event's id, whatever event ids clients choose.
    """
    if record.kind == EVENTS.name:
        return f"{tenant_id}:{record.key}"
    return f"{record.kind}/{tenant_id}:{record.key}"


def tenant_of(
    subject_name: str, region: Region, root: str = SUBJECT_ROOT, kind: str = "events"
) -> str:
    """The tenant of a subject of `region`'s stream and `kind`; anything else is refused."""
    prefix = f"{root}.{region.value}.{kind}."
    if not subject_name.startswith(prefix):
        raise InvalidInputError(f"subject {subject_name!r} is not in region {region.value!r}")
    return validate_tenant_id(subject_name[len(prefix) :])
