"""The region's event log on NATS JetStream: one stream per region, a subject per tenant.

- Stream `ATLASREC_EVENTS_<REGION>` holds the subjects `atlasrec.<region>.events.*` and
  `atlasrec.<region>.served.*` (served requests' records) in file storage, for `max_age_s`
  (the replay window). A stream created before served records existed gets their subjects;
  a changed replay or duplicate window is applied to the existing stream.
- An append publishes one message per record to the tenant's subject of its kind,
  pipelined, and returns when JetStream has confirmed every one (stored, and replicated
  where configured). The message id (`<tenant>:<event_id>`, `served/<tenant>:<request_id>`)
  makes JetStream drop a repeat within the duplicate window (its answer names the first
  copy's sequence number).
- A consumer is a durable pull consumer of one kind (its filter subject) with explicit
  acknowledgement: processes that use the same name share the work, and what is not
  acknowledged within `ack_wait_s` comes back.

nats-py is asynchronous and our callers are threads: each log runs one event loop in a
daemon thread and waits on it with a timeout. A failure or a timeout is `EventLogUnavailable`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, Generic, TypeVar, overload

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    StorageType,
    StreamConfig,
)

from atlasrec.boundary import Boundary
from atlasrec.errors import ConfigError, InvalidInputError
from atlasrec.eventlog.base import ACK_WAIT_S, ConsumerLag, EventLogUnavailable
from atlasrec.eventlog.pull import Puller, position
from atlasrec.eventlog.records import (
    EVENTS,
    KINDS,
    SUBJECT_ROOT,
    Appended,
    Delivery,
    Kind,
    LogEvent,
    R,
    Record,
    message_id,
    region_subjects,
    stream_name,
    subject,
    tenant_of,
)
from atlasrec.tenancy import Region, Scope

MAX_AGE_S = 7 * 86_400.0
CONNECT_TIMEOUT_S = 2.0
MAX_ACK_PENDING = 50_000
log = logging.getLogger("atlasrec.eventlog")
_T = TypeVar("_T")
_FAILURES = (
    nats.errors.Error,
    asyncio.TimeoutError,
    concurrent.futures.TimeoutError,
    OSError,
)


class JetStreamEventLog:
    """A region's event log on a JetStream server."""

    def __init__(
        self,
        region: Region,
        boundary: Boundary,
        url: str,
        *,
        root: str = SUBJECT_ROOT,
        duplicate_window_s: float = 600.0,
        max_age_s: float = MAX_AGE_S,
        ack_wait_s: float = ACK_WAIT_S,
        timeout_s: float = 5.0,
    ) -> None:
        boundary.require_region(region, "event log")
        self.region = region
        self.boundary = boundary
        self.url = url
        self.root = root
        self.stream = stream_name(region, root)
        self.ack_wait_s = ack_wait_s
        self.timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"jetstream-{region.value}", daemon=True
        )
        self._thread.start()
        try:
            self._nc = self._run(self._connect(), CONNECT_TIMEOUT_S + 0.5)
            self._js = self._nc.jetstream(timeout=timeout_s)
            self.log_id = self._run(self._ensure_stream(duplicate_window_s, max_age_s))
        except EventLogUnavailable:
            self._stop_loop()
            raise

    # the loop thread ---------------------------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, _T], timeout_s: float | None = None) -> _T:
        """Run a coroutine on the log's loop; failures and timeouts: `EventLogUnavailable`."""
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(timeout_s or self.timeout_s * 2)
        except _FAILURES as exc:
            future.cancel()
            reason = str(exc) or type(exc).__name__
            raise EventLogUnavailable(
                f"event log of region {self.region.value!r} (NATS JetStream at {self.url}) "
                f"unavailable: {reason}"
            ) from exc

    async def _connect(self) -> NATS:
        return await nats.connect(
            self.url,
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
        )

    async def _ensure_stream(self, duplicate_window_s: float, max_age_s: float) -> str:
        """Create the region's stream when absent; its identity (name and creation time)."""
        subjects = [region_subjects(self.region, self.root, k.name) for k in KINDS]
        try:
            info = await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            info = await self._js.add_stream(
                StreamConfig(
                    name=self.stream,
                    subjects=subjects,
                    storage=StorageType.FILE,
                    duplicate_window=duplicate_window_s,
                    max_age=max_age_s,
                )
            )
        config, held = info.config, set(info.config.subjects or [])
        if (
            set(subjects) - held  # a stream of events only: add the other kinds
            or not math.isclose(config.duplicate_window, duplicate_window_s)
            or not math.isclose(config.max_age or 0.0, max_age_s)
        ):
            config.subjects = sorted(held | set(subjects))
            config.duplicate_window, config.max_age = duplicate_window_s, max_age_s
            await self._js.update_stream(config)
        return f"{self.stream}@{info.created.isoformat() if info.created else 'unknown'}"

    def _stop_loop(self) -> None:
        """Cancel what still runs on the loop (the client's tasks), then stop the thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(concurrent.futures.TimeoutError):
            asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # the EventLog interface --------------------------------------------------------------

    def append(
        self, scope: Scope, events: Sequence[Record], *, actor: str, timeout_s: float | None = None
    ) -> Appended:
        """Publish a tenant's records; returns once JetStream has stored every one."""
        self.boundary.admit(scope, actor=actor, action="eventlog.append")
        wait = self.timeout_s if timeout_s is None else timeout_s
        acks = self._run(self._publish(scope, events, wait), wait + 0.1)
        return Appended([a.seq for a in acks], [bool(a.duplicate) for a in acks])

    async def _publish(self, scope: Scope, events: Sequence[Record], timeout_s: float) -> list[Any]:
        subjects = {k.name: subject(scope, self.root, k.name) for k in KINDS}
        pending = [
            await self._js.publish_async(
                subjects[e.kind],
                e.encode(),
                headers={"Nats-Msg-Id": message_id(scope.tenant_id, e)},
            )
            for e in events
        ]
        return list(await asyncio.wait_for(asyncio.gather(*pending), timeout_s))

    @overload
    def consumer(self, name: str) -> JetStreamConsumer[LogEvent]: ...
    @overload
    def consumer(self, name: str, kind: Kind[R]) -> JetStreamConsumer[R]: ...
    def consumer(self, name: str, kind: Kind[Any] = EVENTS) -> JetStreamConsumer[Any]:
        """The durable pull consumer `name` of `kind` (created on first use, from the start)."""
        return JetStreamConsumer(self, name, kind)

    def read(self, scope: Scope, from_seq: int, max_n: int) -> list[Delivery]:
        """Up to `max_n` of the scope's events from `from_seq` on (an ephemeral consumer)."""
        wanted = subject(scope, self.root)

        async def read() -> list[Msg]:
            sub = await self._js.pull_subscribe(
                wanted,
                stream=self.stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.NONE,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=max(1, from_seq),
                    inactive_threshold=5.0,
                ),
            )
            try:
                # a fetch of more than the subject holds waits out its whole timeout (the
                # server lingers on the pull), so ask for what is there, or not at all
                pending = int((await sub.consumer_info()).num_pending or 0)
                if not pending:
                    return []
                return await sub.fetch(min(max_n, pending), timeout=self.timeout_s / 2)
            except nats.errors.TimeoutError:
                return []
            finally:
                await sub.unsubscribe()

        deliveries = []
        for msg in self._run(read(), self.timeout_s * 3):
            seq = int(msg.metadata.sequence.stream)
            tenant_id = tenant_of(msg.subject, self.region, self.root)
            deliveries.append(Delivery(seq, tenant_id, LogEvent.decode(msg.data)))
        return deliveries

    def replay(self, name: str, from_seq: int) -> None:
        """Recreate consumer `name` (of its kind) so it delivers again from `from_seq`."""

        async def recreate() -> None:
            kind = EVENTS.name
            with contextlib.suppress(nats.js.errors.NotFoundError):
                kind = self._kind_of(await self._js.consumer_info(self.stream, name))
                await self._js.delete_consumer(self.stream, name)
            await self._js.add_consumer(self.stream, self.consumer_config(name, kind, from_seq))

        self._run(recreate())

    def _kind_of(self, info: Any) -> str:
        """The kind of record an existing consumer reads (from its filter subject)."""
        wanted = info.config.filter_subject or ""
        for kind in KINDS:
            if wanted == region_subjects(self.region, self.root, kind.name):
                return kind.name
        raise ConfigError(f"consumer {info.name!r} of {self.stream} reads {wanted!r}")

    def consumer_config(
        self, name: str, kind: str = EVENTS.name, from_seq: int | None = None
    ) -> ConsumerConfig:
        """A durable, explicitly acknowledged consumer of every tenant's subject of `kind`."""
        return ConsumerConfig(
            durable_name=name,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_ack_pending=MAX_ACK_PENDING,
            filter_subject=region_subjects(self.region, self.root, kind),
            deliver_policy=DeliverPolicy.ALL
            if from_seq is None
            else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=from_seq,
        )

    def consumers(self) -> list[str]:
        """The durable consumers' names."""
        return list(self.lags())

    def lags(self) -> dict[str, ConsumerLag]:
        """Every durable consumer's lag, in one request to the server."""
        infos = self._run(self._js.consumers_info(self.stream))
        return {
            i.name: _lag(i) for i in sorted(infos, key=lambda i: i.name) if i.config.durable_name
        }

    def count(self, scope: Scope) -> int:
        """Events the stream holds for the scope's tenant."""
        wanted = subject(scope, self.root)
        info = self._run(self._js.stream_info(self.stream, subjects_filter=wanted))
        return int((info.state.subjects or {}).get(wanted, 0))

    def last_seq(self) -> int:
        """The stream's newest sequence number (0 when empty)."""
        return int(self._run(self._js.stream_info(self.stream)).state.last_seq or 0)

    def delete(self) -> None:
        """Delete the region's stream and everything in it (tests and tear-down only)."""
        self._run(self._js.delete_stream(self.stream))

    def close(self) -> None:
        """Close the connection (every append was confirmed already) and stop the loop."""
        with contextlib.suppress(EventLogUnavailable):
            self._run(self._nc.close())
        self._stop_loop()


class JetStreamConsumer(Generic[R]):
    """A durable pull consumer of one kind of record of a region's stream."""

    def __init__(self, log_: JetStreamEventLog, name: str, kind: Kind[R]) -> None:
        self.log = log_
        self.name = name
        self.kind: Kind[R] = kind
        self._replies: dict[int, str] = {}
        self._tenants: dict[str, str] = {}
        self._puller = Puller(log_._nc, log_.stream, name)
        log_._run(self._bind())

    async def _bind(self) -> None:
        """Create the durable consumer when absent (one of another kind is refused); listen."""
        log_ = self.log
        try:
            held = log_._kind_of(await log_._js.consumer_info(log_.stream, self.name))
        except nats.js.errors.NotFoundError:
            config = log_.consumer_config(self.name, self.kind.name)
            await log_._js.add_consumer(log_.stream, config)
        else:
            if held != self.kind.name:
                raise ConfigError(
                    f"consumer {self.name!r} of {log_.stream} reads {held}, not {self.kind.name}"
                )
        await self._puller.start()

    def fetch(self, max_n: int, timeout_s: float) -> list[Delivery[R]]:
        """Up to `max_n` deliveries, waiting at most `timeout_s` for them."""
        msgs = self.log._run(self._puller.fetch(max_n, timeout_s), timeout_s + self.log.timeout_s)
        if not msgs:
            return []
        try:
            records = self.kind.decode_many([m.data for m in msgs])
            tenants = [self._tenant(m.subject) for m in msgs]
        except (InvalidInputError, ValueError, TypeError, KeyError):
            return [d for d in (self._delivery(m) for m in msgs) if d is not None]
        return [self._delivered(*taken) for taken in zip(msgs, tenants, records, strict=True)]

    def _tenant(self, subject_name: str) -> str:
        """The tenant of a subject of this consumer's kind (validated once per subject)."""
        tenant_id = self._tenants.get(subject_name)
        if tenant_id is None:
            log_ = self.log
            tenant_id = tenant_of(subject_name, log_.region, log_.root, self.kind.name)
            self._tenants[subject_name] = tenant_id
        return tenant_id

    def _delivery(self, msg: Msg) -> Delivery[R] | None:
        """One message as a delivery; one that is not a record of this kind is dropped."""
        try:
            tenant_id = self._tenant(msg.subject)
            event = self.kind.decode(msg.data)
        except (InvalidInputError, ValueError, TypeError, KeyError) as exc:
            seq = position(msg.reply)[0]
            log.warning("event log %s: message %s dropped: %s", self.log.stream, seq, exc)
            self._send([msg.reply], Msg.Ack.Term)
            return None
        return self._delivered(msg, tenant_id, event)

    def _delivered(self, msg: Msg, tenant_id: str, record: R) -> Delivery[R]:
        """A decoded message as a delivery, its reply subject kept for the ack."""
        seq, delivered = position(msg.reply)
        self._replies[seq] = msg.reply
        return Delivery(seq, tenant_id, record, redelivered=delivered > 1)

    def ack(self, deliveries: Sequence[Delivery[R]]) -> None:
        """Acknowledge deliveries (flushed to the server before returning)."""
        self._send(self._taken(deliveries), Msg.Ack.Ack)

    def nak(self, deliveries: Sequence[Delivery[R]]) -> None:
        """Hand deliveries back for redelivery now."""
        self._send(self._taken(deliveries), Msg.Ack.Nak)

    def _taken(self, deliveries: Sequence[Delivery[R]]) -> list[str]:
        return [r for d in deliveries if (r := self._replies.pop(d.seq, None)) is not None]

    def _send(self, replies: list[str], body: bytes) -> None:
        if replies:
            self.log._run(self._puller.settle(replies, body, self.log.timeout_s))

    def lag(self) -> ConsumerLag:
        """Pending (never delivered) and unacknowledged counts, from the server."""
        return _lag(self.log._run(self.log._js.consumer_info(self.log.stream, self.name)))

    def close(self) -> None:
        """Stop listening (the durable consumer stays); hand back what was pulled, not taken."""
        with contextlib.suppress(EventLogUnavailable):
            self._send(self.log._run(self._puller.stop()), Msg.Ack.Nak)


def _lag(info: ConsumerInfo) -> ConsumerLag:
    """A consumer's lag, from the server's description of it."""
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    return ConsumerLag(int(info.num_pending or 0), int(info.num_ack_pending or 0), int(floor or 0))
