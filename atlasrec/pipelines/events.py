"""The event log's operations: a tenant's stored events, the consumers' lag, consuming, replay."""

from __future__ import annotations

import signal
import threading
from typing import Any

from atlasrec.consumers import ConsumerWorker, Sink, offline_sink, online_sink, start_workers
from atlasrec.errors import InvalidInputError
from atlasrec.platform import Plane, Platform
from atlasrec.tenancy import Region

CONSUMERS = ("online", "offline")


def event_stats(platform: Platform, tenant_id: str, *, actor: str) -> dict[str, Any]:
    """What the tenant's region holds of its events, and how far each consumer lags."""
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    offline = plane.offline.scoped(scope, actor=actor).stats()
    lags = {name: plane.events.consumer(name).lag() for name in plane.events.consumers()}
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


def sinks(plane: Plane, names: list[str]) -> dict[str, Sink]:
    """The sinks of the named consumers (`online`, `offline`)."""
    unknown = sorted(set(names) - set(CONSUMERS))
    if unknown:
        raise InvalidInputError(f"unknown consumer {unknown[0]!r} (expected online or offline)")
    return {
        name: online_sink(plane.online, plane.events.log_id)
        if name == "online"
        else offline_sink(plane.offline)
        for name in names
    }


def consume(
    platform: Platform, region: Region, names: list[str], *, once: bool = False
) -> list[ConsumerWorker]:
    """Run the named consumers of a region's log until SIGTERM/SIGINT (or, `once`, until idle)."""
    plane = platform.plane(region)
    chosen = sinks(plane, names)
    if once:
        workers = [ConsumerWorker(plane.events.consumer(n), s, region) for n, s in chosen.items()]
        for worker in workers:
            worker.drain(timeout_s=3600)
        return workers
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    workers = start_workers(plane.events, chosen)
    stop.wait()
    for worker in workers:
        worker.stop()
    return workers


def replay(platform: Platform, region: Region, name: str, from_seq: int) -> dict[str, Any]:
    """Deliver the region's log again to consumer `name` from `from_seq` (rebuilds its sink)."""
    plane = platform.plane(region)
    sinks(plane, [name])
    plane.events.replay(name, from_seq)
    return {"region": region.value, "consumer": name, "from_seq": from_seq}
