"""The region database locked under steady load: acknowledged events against stored ones.

An open-loop client posts batches of 50 events at a fixed rate, each event with its own
user (and, on the new API, its own event id), so every acknowledged event is one distinct
row. Part-way through, this process holds an exclusive SQLite lock on the region database
(`regions/eu/data.db`) for `lock_s` seconds. Afterwards: new path, the offline consumer
catches up and the offline store's event ids are compared with the acknowledged ones (lost,
stored twice); baseline, the server is stopped gracefully (its queue drained) and the rows
its interactions table gained are compared with the acknowledged count.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc

from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from benchmarks.events.config import REGION, TENANT
from benchmarks.events.consume import settings
from benchmarks.events.processes import Home, Proc
from benchmarks.serving.load import Client
from benchmarks.stats import p50_p99

BATCH = 50


@dataclass
class Tally:
    """What the client saw: acknowledged event ids (new) or counts, refusals, latencies."""

    acked_ids: set[str] = field(default_factory=set)
    acked: int = 0
    refused: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    during_lock_ms: list[float] = field(default_factory=list)
    acked_during_lock: int = 0


def _request(
    port: int, key: str, numbers: itertools.count[int], ids: bool
) -> tuple[bytes, list[str]]:
    events, event_ids = [], []
    for _ in range(BATCH):
        event: dict[str, Any] = {"user_id": f"lock{next(numbers)}", "item_id": "p000001"}
        if ids:
            event["event_id"] = uuid.uuid4().hex
            event_ids.append(event["event_id"])
        events.append(event)
    payload = json.dumps({"events": events}, separators=(",", ":")).encode()
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload, event_ids


async def _load(
    port: int, key: str, ids: bool, events_per_s: float, seconds: float, locked: threading.Event
) -> Tally:
    tally, client, numbers = Tally(), Client(port, 64), itertools.count()
    loop = asyncio.get_running_loop()
    rate = events_per_s / BATCH

    async def one(raw: bytes, event_ids: list[str], due: float) -> None:
        during = locked.is_set()
        try:
            status, _ = await asyncio.wait_for(client.request(raw), timeout=10.0)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
        latency = (loop.time() - due) * 1000
        tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
        tally.latencies_ms.append(latency)
        if during:
            tally.during_lock_ms.append(latency)
        if status == 202:
            tally.acked += BATCH
            tally.acked_ids.update(event_ids)
            tally.acked_during_lock += BATCH if during else 0
        else:
            tally.refused += BATCH

    start = loop.time() + 0.05
    tasks = []
    for i in range(int(rate * seconds)):
        due = start + i / rate
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        raw, event_ids = _request(port, key, numbers, ids)
        tasks.append(asyncio.create_task(one(raw, event_ids, due)))
    await asyncio.gather(*tasks)
    client.close()
    return tally


def _hold_lock(home: Home, after_s: float, lock_s: float, locked: threading.Event) -> None:
    time.sleep(after_s)
    holder = sqlite3.connect(home.path / "regions" / REGION / "data.db", timeout=30)
    holder.execute("BEGIN EXCLUSIVE")
    locked.set()
    time.sleep(lock_s)
    locked.clear()
    holder.rollback()
    holder.close()


def interactions(home: Home) -> int:
    """Rows of the tenant in the region database's interactions table (read directly)."""
    db = sqlite3.connect(home.path / "regions" / REGION / "data.db", timeout=60)
    try:
        row = db.execute("SELECT COUNT(*) FROM interactions WHERE tenant_id = ?", (TENANT,))
        return int(row.fetchone()[0])
    finally:
        db.close()


def stored_ids(home: Home, timeout_s: float = 300) -> tuple[list[str], float]:
    """Event ids in the offline store once its consumer has caught up; seconds waited."""
    platform = Platform(settings(home))
    try:
        plane = platform.plane(Region(REGION))
        lag = plane.events.consumer("offline").lag
        started = time.perf_counter()
        while lag().total and time.perf_counter() - started < timeout_s:
            time.sleep(0.2)
        waited = time.perf_counter() - started
        table = plane.offline.scoped(platform.scope(TENANT)).read_table(["event_id"])
        return [str(v) for v in pc.cast(table["event_id"], "string").to_pylist()], waited
    finally:
        platform.close()


def locked_database(
    home: Home,
    server: Proc,
    port: int,
    events_per_s: float,
    before_s: float,
    lock_s: float,
    after_s: float,
) -> dict[str, Any]:
    """Steady load with the region database locked for `lock_s`; acknowledged vs stored."""
    new = not home.variant.baseline
    rows_before = 0 if new else interactions(home)
    locked = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(home, before_s, lock_s, locked))
    holder.start()
    tally = asyncio.run(
        _load(port, home.api_key, new, events_per_s, before_s + lock_s + after_s, locked)
    )
    holder.join()
    out: dict[str, Any] = {
        "offered_events_per_s": events_per_s,
        "lock_s": lock_s,
        "load_s": before_s + lock_s + after_s,
        "acknowledged": tally.acked,
        "acknowledged_during_lock": tally.acked_during_lock,
        "refused": tally.refused,
        "statuses": tally.statuses,
        "latency_ms": p50_p99(tally.latencies_ms),
        "latency_during_lock_ms": p50_p99(tally.during_lock_ms),
        "server_peak_rss_mb": server.peak_rss_mb(),
    }
    if new:
        stored, waited = stored_ids(home)
        unique = set(stored)
        out.update(
            stored=len(stored),
            lost=len(tally.acked_ids - unique),
            duplicates=len(stored) - len(unique),
            stored_not_acknowledged=len(unique - tally.acked_ids),
            consumer_catch_up_s=round(waited, 1),
        )
    else:
        server.stop()  # graceful: the request log's queue is written (or given up) first
        gained = interactions(home) - rows_before
        out.update(stored=gained, lost=max(0, tally.acked - gained), duplicates=None)
    return out
