"""Faults on the event path, with real processes: none loses an acknowledged event, and the
offline store never holds one twice.

A region's server (`atlasrec serve`) and its offline consumer (`atlasrec events consume`) run
as processes on a NATS server of the test's own (so it can be killed), while a client posts
batches of events with ids and remembers which were acknowledged (202). Each test applies one
fault under load: kill -9 of the server, kill -9 of the consumer, kill -9 of NATS, or the
region database locked. Then the load stops, the consumer catches up, and the test counts.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow.compute as pc
import pytest
from utils.event_load import EventLoad, RecommendationLoad
from utils.factories import seed_music_tenant
from utils.flower import free_port
from utils.processes import ATLASREC, Proc, answers, listening, nats_server

from atlasrec.eventlog.records import SERVED
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope

pytestmark = pytest.mark.nats
SHOP = Scope("shop", Region.EU)
BATCH = 20


@dataclass
class World:
    """The processes, the settings they share, and what the client saw acknowledged."""

    settings: Settings
    nats: Proc
    server: Proc
    consumer: Proc
    url: str
    load: EventLoad

    def burst(self, seconds: float, fault: Callable[[], None] | None = None) -> None:
        """Post batches for `seconds`, applying `fault` halfway through."""
        self.load.burst(seconds, fault)

    def stored_ids(self, timeout_s: float = 60) -> list[str]:
        """Every event id in the offline store, once the consumer has caught up."""
        platform = Platform(self.settings)
        try:
            plane = platform.plane(Region.EU)
            consumer = plane.events.consumer("offline")
            deadline = time.monotonic() + timeout_s
            while consumer.lag().total and time.monotonic() < deadline:
                time.sleep(0.2)
            assert consumer.lag().total == 0, "the offline consumer did not catch up"
            table = plane.offline.scoped(SHOP).read_table(["event_id"])
            return [str(v) for v in pc.cast(table["event_id"], "string").to_pylist()]
        finally:
            platform.close()

    def served_in_log(self) -> set[str]:
        """The request ids of every served record in the region's log."""
        platform = Platform(self.settings)
        try:
            log = platform.plane(Region.EU).events
            consumer = log.consumer(f"check{uuid.uuid4().hex[:8]}", SERVED)
            ids: set[str] = set()
            while batch := consumer.fetch(5_000, timeout_s=0.5):
                ids.update(d.event.request_id for d in batch)
                consumer.ack(batch)
            return ids
        finally:
            platform.close()

    def recommend_during(self, seconds: float, fault: Callable[[], None]) -> RecommendationLoad:
        """Ask for recommendations for `seconds` (with the event load), `fault` halfway."""
        load = RecommendationLoad(self.url, self.load.key)
        stop = threading.Event()
        thread = load.run(stop)
        self.burst(seconds, fault)
        stop.set()
        thread.join(timeout=30)
        return load

    def assert_nothing_lost_or_doubled(self) -> None:
        stored = self.stored_ids()
        assert len(stored) == len(set(stored)), "an event is stored twice"
        lost = self.load.acked - set(stored)
        assert not lost, f"{len(lost)} acknowledged events lost"
        assert len(self.load.acked) > 200  # the burst really ran


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("faults")
    nats_port, http_port = free_port(), free_port()
    nats = nats_server(nats_port, folder, dict(os.environ))
    nats.start(lambda: listening(nats_port))
    settings = Settings(
        home=folder / "home",
        event_log_url=f"nats://127.0.0.1:{nats_port}",
        serving_consumers=False,
        event_ack_wait_s=2.0,  # what a killed consumer held comes back within 2 s
    )
    platform = Platform(settings)
    seed_music_tenant(platform, "shop", Region.EU, folder)
    key = platform.control.issue_api_key("shop").api_key
    platform.close()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATLASREC_")},
        "ATLASREC_HOME": str(settings.home),
        "ATLASREC_EVENT_LOG_URL": str(settings.event_log_url),
        "ATLASREC_SERVING_CONSUMERS": "false",
        "ATLASREC_EVENT_ACK_WAIT_S": str(settings.event_ack_wait_s),
    }
    url = f"http://127.0.0.1:{http_port}"
    server = Proc(
        [ATLASREC, "serve", "--region", "eu", "--port", str(http_port)], env, folder / "server.log"
    )
    consumer = Proc(
        [ATLASREC, "events", "consume", "--region", "eu", "--consumer", "offline"],
        env,
        folder / "consumer.log",
    )
    world = World(settings, nats, server, consumer, url, EventLoad([url], key, BATCH))
    server.start(lambda: answers(f"{url}/healthz"))
    consumer.start()
    world.burst(1.0)  # warm: the tenant is loaded, the key cached
    yield world
    for proc in (consumer, server, nats):
        proc.stop()


def test_kill_9_of_the_server_loses_no_acknowledged_event(world: World) -> None:
    def crash_and_restart() -> None:
        world.server.kill9()
        world.server.start(lambda: answers(f"{world.url}/healthz"))

    world.burst(4.0, crash_and_restart)
    world.assert_nothing_lost_or_doubled()


def test_kill_9_of_the_server_loses_no_answered_recommendation(world: World) -> None:
    def crash_and_restart() -> None:
        world.server.kill9()
        world.server.start(lambda: answers(f"{world.url}/healthz"))

    load = world.recommend_during(4.0, crash_and_restart)
    assert len(load.answered) > 50 and load.statuses[0] > 0  # served, and the crash was seen
    lost = load.answered - world.served_in_log()
    assert not lost, f"{len(lost)} answered requests have no record"


def test_kill_9_of_the_consumer_mid_batch_resumes_without_loss_or_duplicates(
    world: World,
) -> None:
    def crash_and_restart() -> None:
        world.consumer.kill9()
        world.consumer.start()

    world.burst(3.0, crash_and_restart)
    world.assert_nothing_lost_or_doubled()


def test_a_nats_restart_loses_no_acknowledged_event(world: World) -> None:
    port = int(world.settings.event_log_url.rsplit(":", 1)[1])  # type: ignore[union-attr]

    def crash_and_restart() -> None:
        world.nats.kill9()
        time.sleep(6.0)  # longer than an append waits (5 s): the outage must answer 503s
        world.nats.start(lambda: listening(port))

    refused_before = world.load.refused
    recommendations = world.recommend_during(4.0, crash_and_restart)
    assert world.load.refused > refused_before  # the outage was seen (503s), not hidden
    world.assert_nothing_lost_or_doubled()
    # recommendations went on through the outage (their records spooled, then appended)
    assert set(recommendations.statuses) == {200}, recommendations.statuses
    lost = recommendations.answered - world.served_in_log()
    assert not lost, f"{len(lost)} answered requests have no record"


def test_a_locked_region_database_does_not_stop_acknowledgements(world: World) -> None:
    database = world.settings.region_dir(Region.EU) / "data.db"
    acked_before = len(world.load.acked)

    def lock_for_3_s() -> None:
        holder = sqlite3.connect(database, timeout=10)
        holder.execute("BEGIN EXCLUSIVE")
        during = len(world.load.acked)
        time.sleep(3.0)
        assert len(world.load.acked) > during + 100  # acknowledged while the database was locked
        holder.rollback()
        holder.close()

    world.burst(4.0, lock_for_3_s)
    assert len(world.load.acked) > acked_before
    world.assert_nothing_lost_or_doubled()
