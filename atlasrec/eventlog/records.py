"""What the event log holds: pseudonymised events, one message each, and their subjects."""

from __future__ import annotations

import json
from dataclasses import dataclass

from atlasrec.errors import InvalidInputError
from atlasrec.tenancy import Region, Scope, validate_tenant_id

SUBJECT_ROOT = "atlasrec"


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One accepted interaction; `user_key` is already pseudonymised, never a raw user id."""

    event_id: str
    user_key: str
    item_id: str
    ts: int
    event: str
    weight: float

    def feature(self) -> tuple[str, str, float, float]:
        """`(user_key, item_id, weight, ts)`, as the online store records events."""
        return (self.user_key, self.item_id, self.weight, float(self.ts))

    def encode(self) -> bytes:
        """The message body: a compact JSON array."""
        return json.dumps(
            [self.event_id, self.user_key, self.item_id, self.ts, self.event, self.weight],
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> LogEvent:
        """Inverse of `encode`."""
        event_id, user_key, item_id, ts, event, weight = json.loads(body)
        return cls(str(event_id), str(user_key), str(item_id), int(ts), str(event), float(weight))


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event handed to a consumer: its position in the region's log, and its tenant."""

    seq: int
    tenant_id: str
    event: LogEvent
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


def region_subjects(region: Region, root: str = SUBJECT_ROOT) -> str:
    """Every subject of the region's events."""
    return f"{root}.{region.value}.events.*"


def subject(scope: Scope, root: str = SUBJECT_ROOT) -> str:
    """The subject of one tenant's events in its region, built only from an admitted scope."""
    return f"{root}.{scope.region.value}.events.{validate_tenant_id(scope.tenant_id)}"


def tenant_of(subject_name: str, region: Region, root: str = SUBJECT_ROOT) -> str:
    """The tenant of a subject of `region`'s stream; anything else is refused."""
    prefix = f"{root}.{region.value}.events."
    if not subject_name.startswith(prefix):
        raise InvalidInputError(f"subject {subject_name!r} is not in region {region.value!r}")
    return validate_tenant_id(subject_name[len(prefix) :])
