"""The event log's consumers: durable, at-least-once, and idempotent where they write.

- `online`: applies events to the online store (Redis) once each, by sequence number;
- `offline`: writes events to the offline store (Parquet by tenant and date), where a
  sequence number already stored is skipped;
- `requests`: writes served requests' records to the region DB (`served_requests`), where
  a request id already stored is skipped (`atlasrec/served_requests.py`);
- `catalog`: applies catalog upserts kept in the log while the region DB was down, where a
  later write of an item wins (`atlasrec/deferred_catalog.py`).

The events' consumers read only events, the request log's only served records, the
catalog's only deferred upserts (a consumer reads one kind of record of the log).

A `ConsumerWorker` thread fetches a batch, hands it to its sink and acknowledges it only
after the sink has returned; a sink that fails gets the batch again (after a back-off), so a
crash at any point loses nothing and, the sinks being idempotent, duplicates nothing.
`atlasrec events consume` runs workers in their own process; `atlasrec serve` runs them in
the serving process when `serving_consumers` is on (the embedded default).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from atlasrec.errors import BoundaryViolation, UnknownTenantError
from atlasrec.eventlog.base import Consumer, EventLog
from atlasrec.eventlog.records import Delivery, Kind, R
from atlasrec.offline_store import OfflineStore
from atlasrec.online_store import OnlineStore
from atlasrec.tenancy import Region, Scope

ACTOR = "consumer"
BATCH = 2_000
FETCH_WAIT_S = 0.2
LINGER_FETCH_S = 0.01
BACKOFF_S = 1.0
GC_THRESHOLD = 50_000
log = logging.getLogger("atlasrec.consumers")

Sink = Callable[[Scope, Sequence[Delivery[R]]], None]
"""Writes one tenant's deliveries; raises to have the batch delivered again."""


def by_tenant(deliveries: Sequence[Delivery[R]], region: Region) -> dict[Scope, list[Delivery[R]]]:
    """Deliveries grouped under their tenant's scope in `region`, in log order."""
    groups: dict[str, list[Delivery[R]]] = defaultdict(list)
    for d in deliveries:
        groups[d.tenant_id].append(d)
    return {Scope(tenant_id, region): group for tenant_id, group in groups.items()}


def online_sink(store: OnlineStore, log_id: str) -> Sink:
    """Apply deliveries of the log `log_id` to the online store, once per sequence number."""

    def write(scope: Scope, deliveries: Sequence[Delivery]) -> None:
        scoped = store.scoped(scope, actor=ACTOR)
        features = [d.event.feature() for d in deliveries]
        scoped.record_logged(features, [d.seq for d in deliveries], log_id=log_id)

    return write


def offline_sink(store: OfflineStore) -> Sink:
    """Write deliveries to the offline store (a sequence number already stored is skipped)."""

    def write(scope: Scope, deliveries: Sequence[Delivery]) -> None:
        store.scoped(scope).write([d.seq for d in deliveries], [d.event for d in deliveries])

    return write


def collect_less_often(threshold: int = GC_THRESHOLD) -> None:
    """Run CPython's cyclic collector after `threshold` new objects, not the default 700.

    A consumer makes a few objects per record and keeps almost none: at the default, a
    collection runs every few dozen records. Reference counting still frees nearly all of
    it at once; only cycles wait for the rarer collections. For consumer processes only.
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)


@dataclass
class WorkerStats:
    """What a worker has done, for metrics and `events stats`."""

    batches: int = 0
    events: int = 0
    redelivered: int = 0
    failures: int = 0
    dropped: int = 0


class ConsumerWorker(Generic[R]):
    """One thread consuming one durable consumer of a region's log into one sink."""

    def __init__(
        self,
        consumer: Consumer[R],
        sink: Sink[R],
        region: Region,
        *,
        batch: int = BATCH,
        linger_s: float = 0.0,
    ) -> None:
        self.consumer: Consumer[R] = consumer
        self.sink: Sink[R] = sink
        self.region = region
        self.batch = batch
        self.linger_s = linger_s
        """How long a batch that is not full waits for more records (0: none)."""
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"consumer-{consumer.name}", daemon=True
        )

    def start(self) -> ConsumerWorker[R]:
        """Start consuming in the background."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the batch in hand, then stop (what is not acked is delivered again later)."""
        self.signal_stop()
        self._thread.join(timeout_s)

    def signal_stop(self) -> None:
        """Ask the worker to stop after the batch in hand (`stop` waits for it)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # keep consuming; the batch comes back
                self.stats.failures += 1
                log.exception("consumer %s: batch failed; retrying", self.consumer.name)
                self._stop.wait(BACKOFF_S)

    def step(self) -> int:
        """Fetch one batch, write it, acknowledge it; the number of events handled."""
        deliveries = self.consumer.fetch(self.batch, FETCH_WAIT_S)
        if not deliveries:
            return 0
        if self.linger_s and len(deliveries) < self.batch and not self._stop.is_set():
            self._stop.wait(self.linger_s)  # fewer, larger writes where freshness is not urgent
            deliveries += self.consumer.fetch(self.batch - len(deliveries), LINGER_FETCH_S)
        try:
            for scope, group in by_tenant(deliveries, self.region).items():
                self._write(scope, group)
        except Exception:
            self.consumer.nak(deliveries)
            raise
        self.consumer.ack(deliveries)
        self.stats.batches += 1
        self.stats.events += len(deliveries)
        self.stats.redelivered += sum(d.redelivered for d in deliveries)
        return len(deliveries)

    def _write(self, scope: Scope, group: list[Delivery[R]]) -> None:
        try:
            self.sink(scope, group)
        except (BoundaryViolation, UnknownTenantError) as exc:  # refused and audited: drop
            self.stats.dropped += len(group)
            log.warning("consumer %s: %d events dropped: %s", self.consumer.name, len(group), exc)

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Consume in this thread until nothing is left (a worker not started); whether done."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.step() == 0 and self.consumer.lag().total == 0:
                return True
        return False

    def caught_up(self, timeout_s: float = 10.0) -> bool:
        """Wait until the started worker has finished everything appended so far."""
        deadline = time.monotonic() + timeout_s
        while self.consumer.lag().total > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


@dataclass(frozen=True)
class Subscription(Generic[R]):
    """What a named consumer reads (its kind of record) and where it writes (its sink)."""

    kind: Kind[R]
    sink: Sink[R]
    linger_s: float = 0.0
    """How long its batches wait to fill (`ConsumerWorker.linger_s`)."""

    def worker(self, log_: EventLog, name: str, *, batch: int = BATCH) -> ConsumerWorker[R]:
        """A worker (not started) on the durable consumer `name` of this kind."""
        consumer = log_.consumer(name, self.kind)
        return ConsumerWorker(consumer, self.sink, log_.region, batch=batch, linger_s=self.linger_s)


def start_workers(
    log_: EventLog, subscriptions: dict[str, Subscription[Any]], *, batch: int = BATCH
) -> list[ConsumerWorker[Any]]:
    """One started worker per named subscription, each on the durable consumer of that name."""
    return [s.worker(log_, name, batch=batch).start() for name, s in subscriptions.items()]
