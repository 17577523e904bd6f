"""The event log's operations: a tenant's stored events, the consumers' lag, consuming, replay."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from atlasrec.consumers import (
    ConsumerWorker,
    Subscription,
    collect_less_often,
    offline_sink,
    online_sink,
    start_workers,
)
from atlasrec.deferred_catalog import catalog_sink
from atlasrec.errors import InvalidInputError
from atlasrec.eventlog.records import CATALOG, EVENTS, SERVED
from atlasrec.online_store import OnlineStore
from atlasrec.platform import Plane, Platform
from atlasrec.served_requests import requests_sink
from atlasrec.tenancy import Region

CONSUMERS = ("online", "offline", "requests", "catalog")
REQUESTS_LINGER_S = 0.5
"""How long the `requests` consumer lets a batch fill (a transaction and ledger record each)."""


def event_stats(platform: Platform, tenant_id: str, *, actor: str) -> dict[str, Any]:
    """What the tenant's region holds of its events, and how far each consumer lags."""
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    offline = plane.offline.scoped(scope, actor=actor).stats()
    lags = plane.events.lags()
    return {
        "tenant": tenant_id,
        "region": scope.region.value,
        "stored": offline.rows,
        "offline": {
            "rows": offline.rows,
            "files": offline.files,
            "bytes": offline.bytes,
            "ingested": offline.ingested,
        },
        "log": {"events": plane.events.count(scope), "last_seq": plane.events.last_seq()},
        "consumers": {name: lag.total for name, lag in lags.items()},
        "consumer_detail": {
            name: {"pending": lag.pending, "unacknowledged": lag.unacknowledged}
            for name, lag in lags.items()
        },
    }


def subscriptions(
    plane: Plane, names: list[str], *, online: OnlineStore | None = None
) -> dict[str, Subscription[Any]]:
    """What the named consumers read and write (`online`, `offline`, `requests`, `catalog`).

    `online` is the online store the `online` consumer writes (default: the plane's).
    """
    unknown = sorted(set(names) - set(CONSUMERS))
    if unknown:
        raise InvalidInputError(
            f"unknown consumer {unknown[0]!r} (expected one of {', '.join(CONSUMERS)})"
        )
    chosen: dict[str, Subscription[Any]] = {}
    for name in names:
        if name == "online":
            sink = online_sink(online or plane.online, plane.events.log_id)
            chosen[name] = Subscription(EVENTS, sink)
        elif name == "offline":
            chosen[name] = Subscription(EVENTS, offline_sink(plane.offline))
        elif name == "requests":
            # served records arrive one group commit at a time: store them in larger batches
            chosen[name] = Subscription(SERVED, requests_sink(plane), REQUESTS_LINGER_S)
        else:
            chosen[name] = Subscription(CATALOG, catalog_sink(plane))
    return chosen


def consume(
    platform: Platform,
    region: Region,
    names: list[str],
    *,
    once: bool = False,
    started: Callable[[list[str]], None] = lambda _: None,
) -> list[ConsumerWorker[Any]]:
    """Run the named consumers of a region's log until SIGTERM/SIGINT (or, `once`, until idle).

    `started` is told the consumers' names once they are bound and pulling.
    """
    plane = platform.plane(region)
    chosen = subscriptions(plane, names)
    collect_less_often()
    if once:
        workers = [s.worker(plane.events, name) for name, s in chosen.items()]
        for worker in workers:
            worker.drain(timeout_s=3600)
        return workers
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    workers = start_workers(plane.events, chosen)
    started(list(chosen))
    stop.wait()
    for worker in workers:
        worker.stop()
    return workers


def replay(platform: Platform, region: Region, name: str, from_seq: int) -> dict[str, Any]:
    """Deliver the region's log again to consumer `name` from `from_seq` (rebuilds its sink)."""
    plane = platform.plane(region)
    subscriptions(plane, [name])
    plane.events.replay(name, from_seq)
    return {"region": region.value, "consumer": name, "from_seq": from_seq}
