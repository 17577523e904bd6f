"""The event log's interface, one per region, and the boundary check every append passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, overload

from atlasrec.errors import UnavailableError
from atlasrec.eventlog.records import Appended, Delivery, Kind, LogEvent, R, Record
from atlasrec.tenancy import Region, Scope

ACK_WAIT_S = 30.0
"""A delivery not acknowledged within this time is delivered again (to any consumer)."""


class EventLogUnavailable(UnavailableError):
    """The region's event log cannot be reached or did not confirm in time: nothing is acked."""


@dataclass(frozen=True)
class ConsumerLag:
    """How far a durable consumer is behind the log."""

    pending: int
    """Appended, never delivered to this consumer."""
    unacknowledged: int
    """Delivered, not yet acknowledged."""
    ack_floor: int = 0
    """Every event up to this sequence number is acknowledged."""

    @property
    def total(self) -> int:
        """Events this consumer has still to finish."""
        return self.pending + self.unacknowledged


class Consumer(Protocol[R]):
    """A durable, at-least-once consumer of one kind of record: what is not acked comes back."""

    name: str

    def fetch(self, max_n: int, timeout_s: float) -> list[Delivery[R]]:
        """Up to `max_n` deliveries, waiting at most `timeout_s` for the first."""

    def ack(self, deliveries: Sequence[Delivery[R]]) -> None:
        """Mark deliveries done: they are not delivered again."""

    def nak(self, deliveries: Sequence[Delivery[R]]) -> None:
        """Hand deliveries back for redelivery (a failed batch)."""

    def lag(self) -> ConsumerLag:
        """How far behind the log this consumer is."""

    def close(self) -> None:
        """Release this process's handle (the consumer's position stays in the log)."""


class EventLog(Protocol):
    """A region's durable event log."""

    region: Region
    log_id: str
    """Identifies this log's sequence numbers: a log recreated from empty gets a new id."""

    def append(
        self, scope: Scope, events: Sequence[Record], *, actor: str, timeout_s: float | None = None
    ) -> Appended:
        """Append a tenant's records durably; returns only once they are stored.

        `timeout_s` bounds the wait for a remote log's confirmation (`EventLogUnavailable`
        past it; what was sent may still be stored, and a retry is de-duplicated); None: the
        log's own timeout. The embedded log waits on its file lock regardless.

        The scope is admitted at the region's boundary first (a refusal is audited), and the
        subject is built from it, so nothing is written to another region's log. Each
        record goes under its kind (events, served requests), de-duplicated by its key.
        """

    # The durable consumer `name` of one kind of record (default: events), created on first
    # use from the log's start; the name of an existing consumer of another kind is refused
    # (`ConfigError`).
    @overload
    def consumer(self, name: str) -> Consumer[LogEvent]: ...
    @overload
    def consumer(self, name: str, kind: Kind[R]) -> Consumer[R]: ...

    def read(self, scope: Scope, from_seq: int, max_n: int) -> list[Delivery]:
        """Up to `max_n` of the scope's events from `from_seq` on, in order, outside consumers."""

    def replay(self, name: str, from_seq: int) -> None:
        """Move consumer `name` (of its kind) so it delivers again everything from `from_seq`."""

    def consumers(self) -> list[str]:
        """The names of the log's durable consumers."""

    def lags(self) -> dict[str, ConsumerLag]:
        """Every durable consumer's lag, read without attaching to any of them."""

    def count(self, scope: Scope) -> int:
        """Events held in the log for the scope's tenant."""

    def last_seq(self) -> int:
        """The sequence number of the newest record of any kind (0 when empty)."""

    def close(self) -> None:
        """Release connections."""
