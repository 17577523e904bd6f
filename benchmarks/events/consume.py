"""Consumer throughput into Parquet: a pre-filled log drained by `events consume --once`.

The log (JetStream, or the embedded SQLite log) is filled from this process through the new
code's `EventLog.append` (batches of 1,000: what the serving route does, without HTTP); then
`atlasrec events consume --region eu --consumer offline --once` runs as its own process and
is timed to exit (its start-up included; reported apart from an empty-log run's).
"""

from __future__ import annotations

import random
import re
import time
import uuid
from pathlib import Path
from typing import Any

from atlasrec.eventlog.records import LogEvent
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region
from benchmarks.events.config import LOAD_USERS, REGION, TENANT
from benchmarks.events.processes import Home, run_child

APPEND_BATCH = 1_000


def settings(home: Home) -> Settings:
    """The settings a home's processes run with, for this process's own access."""
    return Settings(
        home=home.path,
        redis_url=home.redis_url,
        event_log_url=home.variant.log_url,
        event_log_root=home.root,
        serving_consumers=False,
    )


def prefill(home: Home, items: list[str], n: int, seed: int = 0) -> dict[str, Any]:
    """Append `n` events of the tenant to the home's log; the append rate."""
    rng = random.Random(seed)
    platform = Platform(settings(home))
    try:
        plane = platform.plane(Region(REGION))
        scope = platform.scope(TENANT)
        ts = int(time.time()) - 3_600
        started = time.perf_counter()
        done = 0
        while done < n:
            size = min(APPEND_BATCH, n - done)
            batch = [
                LogEvent(
                    event_id=uuid.uuid4().hex,
                    user_key=f"k{rng.randrange(LOAD_USERS):08x}",
                    item_id=rng.choice(items),
                    ts=ts + (done + i) // 1_000,
                    event="view",
                    weight=1.0,
                )
                for i in range(size)
            ]
            plane.events.append(scope, batch, actor="bench:events")
            done += size
        seconds = time.perf_counter() - started
    finally:
        platform.close()
    return {"events": n, "seconds": round(seconds, 2), "events_per_s": round(n / seconds, 1)}


_CONSUMED = re.compile(r"offline: (\d+) records \(\d+ redelivered\), (\d+) failures")


def drain(home: Home) -> dict[str, Any]:
    """Time `events consume --consumer offline --once` to exit; events/s, peak RSS."""
    argv = home.cli("events", "consume", "--region", REGION, "--consumer", "offline", "--once")
    done = run_child(argv, home.env(), home.variant.code)
    found = _CONSUMED.search(done.output)
    if done.returncode or not found:
        raise RuntimeError(f"consume failed ({done.returncode}): {done.output[-2000:]}")
    events, failures = int(found.group(1)), int(found.group(2))
    return {
        **done.as_dict(),
        "events": events,
        "failures": failures,
        "events_per_s": round(events / done.seconds, 1),
    }


def caught_up(home: Home, name: str = "offline", timeout_s: float = 600) -> dict[str, Any]:
    """Wait until consumer `name` of the home's log has finished its backlog; how long."""
    platform = Platform(settings(home))
    try:
        lag = platform.plane(Region(REGION)).events.consumer(name).lag
        started, backlog = time.perf_counter(), lag().total
        while lag().total and time.perf_counter() - started < timeout_s:
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        return {"backlog": backlog, "seconds": round(seconds, 1), "left": lag().total}
    finally:
        platform.close()


def offline_rows(home: Home) -> int:
    """Rows of the tenant in the home's offline store."""
    platform = Platform(settings(home))
    try:
        plane = platform.plane(Region(REGION))
        return int(plane.offline.scoped(platform.scope(TENANT)).stats().rows)
    finally:
        platform.close()


def consumer_throughput(
    home: Home, items: list[str], n: int, *, startup: bool = True
) -> dict[str, Any]:
    """Start-up on an empty log (if `startup`), then pre-fill `n` events, drain them."""
    empty = drain(home) if startup else {"seconds": 0.0}
    print(f"  {home.variant.name}: empty-log consume run {empty['seconds']} s", flush=True)
    filled = prefill(home, items, n)
    print(
        f"  {home.variant.name}: pre-filled {n} events at {filled['events_per_s']} ev/s", flush=True
    )
    drained = drain(home)
    work_s = drained["seconds"] - empty["seconds"]
    drained["events_per_s_excluding_startup"] = (
        round(drained["events"] / work_s, 1) if startup and work_s > 0.5 else None
    )
    drained["offline_rows"] = offline_rows(home)
    print(
        f"  {home.variant.name}: drained {drained['events']} events in {drained['seconds']} s "
        f"({drained['events_per_s']} ev/s; {drained['events_per_s_excluding_startup']} ev/s "
        f"without start-up), peak RSS {drained['peak_rss_mb']} MB, "
        f"{drained['offline_rows']} rows in Parquet",
        flush=True,
    )
    return {"startup": empty, "prefill": filled, "drain": drained}


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
