"""Scale-out on loopback: two serving processes and two consumer processes share one region's log.

Both servers (`atlasrec serve`) append to the region's JetStream stream; both consumer
processes (`atlasrec events consume`, the online and the offline consumer each) pull from the
same durable consumers, so the work is split between them. One consumer process is killed
(-9) under load and started again: what it held unacknowledged is delivered again, and the
stores apply every logged event exactly once (Parquet by sequence number, Redis by its bit).
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pytest
from utils.event_load import EventLoad
from utils.factories import seed_music_tenant
from utils.flower import free_port
from utils.processes import ATLASREC, Proc, answers, listening, nats_server

from atlasrec.eventlog.base import EventLog
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope

pytestmark = pytest.mark.nats
REDIS_URL = os.environ.get("ATLASREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CONSUMERS = ("online", "offline")


@dataclass
class Fleet:
    """The region's processes and the client's load on them."""

    settings: Settings
    scope: Scope
    servers: list[Proc]
    consumers: list[Proc]
    load: EventLoad
    folder: Path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    scope = Scope(f"scale-{uuid.uuid4().hex[:8]}", Region.EU)  # its own keys in the shared Redis
    nats_port = free_port()
    nats = nats_server(nats_port, tmp_path, dict(os.environ))
    nats.start(lambda: listening(nats_port))
    settings = Settings(
        home=tmp_path / "home",
        event_log_url=f"nats://127.0.0.1:{nats_port}",
        redis_url=REDIS_URL,
        serving_consumers=False,
        event_ack_wait_s=2.0,
    )
    platform = Platform(settings)
    seed_music_tenant(platform, scope.tenant_id, scope.region, tmp_path)
    key = platform.control.issue_api_key(scope.tenant_id).api_key
    platform.close()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATLASREC_")},
        "ATLASREC_HOME": str(settings.home),
        "ATLASREC_EVENT_LOG_URL": str(settings.event_log_url),
        "ATLASREC_REDIS_URL": REDIS_URL,
        "ATLASREC_SERVING_CONSUMERS": "false",
        "ATLASREC_EVENT_ACK_WAIT_S": "2.0",
    }
    ports = [free_port(), free_port()]
    servers = [
        Proc([ATLASREC, "serve", "--region", "eu", "--port", str(p)], env, tmp_path / f"s{p}.log")
        for p in ports
    ]
    consumers = [
        Proc([ATLASREC, "events", "consume", "--region", "eu"], env, tmp_path / f"c{n}.log")
        for n in range(2)
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    for server, url in zip(servers, urls, strict=True):
        server.start(lambda url=url: answers(f"{url}/healthz"))
    for consumer in consumers:
        consumer.start()
    yield Fleet(settings, scope, servers, consumers, EventLoad(urls, key), tmp_path)
    for proc in (*consumers, *servers, nats):
        proc.stop()


def _caught_up(platform: Platform, timeout_s: float = 60) -> None:
    events = platform.plane(Region.EU).events
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lags = events.lags()
        if all(name in lags and lags[name].total == 0 for name in CONSUMERS):
            return
        time.sleep(0.2)
    raise AssertionError("the consumers did not catch up")


def _handled(log: Path) -> dict[str, tuple[int, int]]:
    """(events, redelivered) per consumer of a stopped `events consume` process."""
    text = log.read_text()
    found = re.findall(r"^(online|offline): (\d+) records \((\d+) redelivered\)", text, re.M)
    return {name: (int(n), int(again)) for name, n, again in found}


def _holding(events: EventLog) -> bool:
    lags = events.lags()
    return all(name in lags and lags[name].unacknowledged for name in CONSUMERS)


def _kill_holding_a_batch(fleet: Fleet) -> None:
    """kill -9 the second consumer process while it holds unacknowledged deliveries.

    The first is frozen (SIGSTOP) for longer than the ack wait, so what it held is handed to
    the second and its pull requests expire: the log's unacknowledged deliveries are then the
    second's alone. It is killed when, even after the kill, both consumers hold some (those
    must be delivered again), then started again; the first resumes (SIGCONT) only once the
    new process is pulling, so the load left finds both at work whatever the start-up time.
    """
    survivor, victim = fleet.consumers
    assert survivor.proc is not None
    survivor.proc.send_signal(signal.SIGSTOP)
    platform = Platform(fleet.settings)
    try:
        events = platform.plane(Region.EU).events
        time.sleep(fleet.settings.event_ack_wait_s + 1.0)
        for _ in range(50):  # until a kill lands while both consumers hold deliveries
            while not _holding(events):
                time.sleep(0.01)
            victim.kill9()
            if _holding(events):
                break
            victim.start()
        else:
            raise AssertionError("the consumer process never held a batch when killed")
        victim.log.write_text("")  # count only what the new process handles
        victim.start(lambda: "consuming region" in victim.log.read_text(), timeout_s=180)
    finally:
        platform.close()
        survivor.proc.send_signal(signal.SIGCONT)


def _applied(fleet: Fleet) -> tuple[int, float]:
    """(events the log holds for the tenant, event weight the online store has counted),
    once both consumers have caught up."""
    platform = Platform(fleet.settings)
    try:
        _caught_up(platform)
        plane = platform.plane(Region.EU)
        online = plane.online.scoped(fleet.scope, actor="test")
        counts = online.item_counts([f"i{k}" for k in range(30)])
        return plane.events.count(fleet.scope), sum(counts.values())
    finally:
        platform.close()


def _stored_ids(fleet: Fleet) -> list[str]:
    platform = Platform(fleet.settings)
    try:
        offline = platform.plane(Region.EU).offline.scoped(fleet.scope)
        table = offline.read_table(["event_id", "seq"])
        logged = table.filter(pc.greater_equal(table["seq"], 0))["event_id"]  # not ingested rows
        return [str(v) for v in pc.cast(logged, "string").to_pylist()]
    finally:
        platform.close()


def test_two_servers_and_two_consumers_share_the_log_and_survive_a_consumer_kill(
    fleet: Fleet,
) -> None:
    fleet.load.burst(1.0)  # both servers load the tenant (its online state is warmed once)
    logged_before, counted_before = _applied(fleet)
    fleet.load.burst(8.0, lambda: _kill_holding_a_batch(fleet))
    logged, counted = _applied(fleet)
    for consumer in fleet.consumers:
        consumer.stop()  # SIGTERM: each prints what it handled
    ids = _stored_ids(fleet)
    load = fleet.load
    assert all(load.acked_by[url] > 500 for url in load.urls), load.acked_by
    assert len(ids) == len(set(ids)), "an event is stored twice in the offline store"
    assert not load.acked - set(ids), "an acknowledged event is missing from the offline store"
    assert len(ids) == logged  # every logged event is stored, once
    assert counted - counted_before == pytest.approx(logged - logged_before), (
        "the online store applied an event twice, or not at all"
    )
    handled = [_handled(consumer.log) for consumer in fleet.consumers]
    for name in CONSUMERS:  # both processes worked; the killed one's batch came back
        assert all(h[name][0] > 0 for h in handled), handled
        assert sum(h[name][1] for h in handled) > 0, handled
