"""Served requests through the region's log (embedded and JetStream) into the region DB:
stored once by the in-server `requests` consumer, never seen by the events' consumers, and
recommendations keep being served while the log is down."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator

import pyarrow.compute as pc
import pytest
from conftest import ServedRegion, bearer, client_for, operator
from fastapi.testclient import TestClient
from sqlmodel import select

from atlasrec.dataplane.tables import ServedRequest
from atlasrec.eventlog.base import EventLogUnavailable
from atlasrec.eventlog.jetstream import JetStreamEventLog
from atlasrec.eventlog.records import SERVED, Record
from atlasrec.pipelines.events import event_stats
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope

SHOP = Scope("shop", Region.EU)
NATS_URL = os.environ.get("ATLASREC_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture
def backend() -> str:
    """SQLite only here (the served-request consumer's tests cover PostgreSQL)."""
    return "sqlite"


@pytest.fixture(params=["local", pytest.param("jetstream", marks=pytest.mark.nats)])
def settings(make_settings, request: pytest.FixtureRequest) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    """The embedded log, or JetStream under subjects of the test's own."""
    if request.param == "local":
        yield make_settings()
        return
    settings = make_settings(event_log_url=NATS_URL, event_log_root=f"t{uuid.uuid4().hex[:10]}")
    yield settings
    platform = Platform(settings)
    for region in (Region.EU, Region.US):
        log = platform.plane(region).events
        assert isinstance(log, JetStreamEventLog)
        log.delete()
    platform.close()


@pytest.fixture
def client(region: ServedRegion) -> Iterator[TestClient]:
    with client_for(region.platform, refresh=False) as c:
        yield c


def recommend(client: TestClient, key: str, user_id: str) -> str:
    response = client.post(
        "/v1/recommendations", json={"user_id": user_id, "k": 3}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


def stored(region: ServedRegion) -> list[str]:
    plane = region.platform.plane(Region.EU)
    with plane.session(SHOP, actor="t", action="t") as session:
        return sorted(session.exec(select(ServedRequest.request_id)).all())


def settled(client: TestClient) -> bool:
    """Whether everything served so far is logged and every consumer has finished it."""
    serving = client.app.state.serving  # type: ignore[attr-defined]
    return bool(serving.request_log.flush()) and all(w.caught_up(10.0) for w in serving.consumers)


def test_served_requests_are_stored_once_by_the_requests_consumer_only(
    region: ServedRegion, client: TestClient
) -> None:
    plane = region.platform.plane(Region.EU)
    served = sorted(recommend(client, region.keys["shop"], f"user-{n}") for n in range(4))
    assert settled(client)
    assert stored(region) == served
    batches = [
        json.loads(r.details)
        for r in plane.ledger.records(tenant_id="shop", action="serving.requests")
    ]
    assert sum(int(b["count"]) for b in batches) == 4
    # the events' consumers saw none of them: no logged row in the offline store (only the
    # ingested file's, seq -1), no event in the log
    seqs = plane.offline.scoped(SHOP).read_table(["seq"])["seq"]
    assert pc.sum(pc.greater_equal(seqs, 0)).as_py() in (0, None)
    assert plane.events.count(SHOP) == 0
    stats = event_stats(region.platform, "shop", actor="t")
    assert stats["consumers"] == {"catalog": 0, "offline": 0, "online": 0, "requests": 0}
    # delivered again (a replay of the whole log): stored once still
    serving = client.app.state.serving  # type: ignore[attr-defined]
    worker = next(w for w in serving.consumers if w.consumer.name == "requests")
    before = worker.stats.events
    plane.events.replay("requests", 1)
    assert worker.caught_up(10.0)
    assert worker.stats.events >= before + 4
    assert stored(region) == served
    after = plane.ledger.records(tenant_id="shop", action="serving.requests")
    assert len(after) == len(batches)


def test_an_answered_request_is_in_the_log_before_its_answer(
    region: ServedRegion, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = region.platform.plane(Region.EU).events
    consumer = log.consumer("durability-check", SERVED)
    append = log.append

    def slow(scope: Scope, events: list[Record], *, actor: str, **wait: object) -> object:
        time.sleep(0.3)  # a slow log (within the append wait): the answer waits for it
        return append(scope, events, actor=actor)

    monkeypatch.setattr(log, "append", slow)
    answered = []
    for n in range(3):
        answered.append(recommend(client, region.keys["shop"], f"user-{n}"))
        in_log = [d.event.request_id for d in consumer.fetch(10, timeout_s=0.05)]
        assert in_log == answered[-1:]  # no flush: it was appended before the answer


def test_recommendations_are_served_while_the_log_is_down_and_logged_after(
    region: ServedRegion, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = region.platform.plane(Region.EU)
    up = plane.events.append

    def down(scope: Scope, events: list[Record], *, actor: str, **wait: object) -> None:
        raise EventLogUnavailable("event log of region 'eu' unavailable: connection refused")

    monkeypatch.setattr(plane.events, "append", down)
    served = sorted(recommend(client, region.keys["shop"], f"user-{n}") for n in range(3))
    serving = client.app.state.serving  # type: ignore[attr-defined]
    assert not serving.request_log.flush()
    health = operator(client).get("/healthz/detail").json()["request_log"]
    assert health["held"] == 3 and health["failures"] >= 1 and health["logged"] == 0
    metrics = operator(client).get("/metrics").text
    assert 'atlasrec_request_log{state="held"} 3.0' in metrics
    monkeypatch.setattr(plane.events, "append", up)
    assert settled(client)
    assert stored(region) == served
    assert operator(client).get("/healthz/detail").json()["request_log"]["held"] == 0
