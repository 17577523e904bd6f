"""POST /v1/events: durable in the region's event log before 202, then in both stores."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
from conftest import ServedRegion, bearer, client_for
from fastapi.testclient import TestClient

from atlasrec.eventlog.base import EventLogUnavailable
from atlasrec.eventlog.jetstream import JetStreamEventLog
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope

SHOP = Scope("shop", Region.EU)
NATS_URL = os.environ.get("ATLASREC_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture
def backend() -> str:
    """SQLite only here (the serving tests cover PostgreSQL); the log is what varies."""
    return "sqlite"


@pytest.fixture(params=["local", pytest.param("jetstream", marks=pytest.mark.nats)])
def settings(make_settings, request: pytest.FixtureRequest) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    """The embedded log, or JetStream under subjects of the test's own."""
    if request.param == "local":
        yield make_settings()
        return
    settings = make_settings(event_log_url=NATS_URL, event_log_root=f"t{uuid.uuid4().hex[:10]}")
    yield settings
    for region in (Region.EU, Region.US):
        from atlasrec.platform import Platform

        platform = Platform(settings)
        log = platform.plane(region).events
        assert isinstance(log, JetStreamEventLog)
        log.delete()
        platform.close()


@pytest.fixture
def client(region: ServedRegion) -> Iterator[TestClient]:
    with client_for(region.platform, refresh=False) as c:
        yield c


def caught_up(client: TestClient) -> bool:
    """Whether the app's consumers finished everything logged so far (within 10 s)."""
    workers = client.app.state.serving.consumers  # type: ignore[attr-defined]
    return bool(workers) and all(w.caught_up(10.0) for w in workers)


def post(client: TestClient, key: str, events: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    return client.post("/v1/events", json={"events": events}, headers=bearer(key))


def event(n: int, **fields: object) -> dict[str, object]:
    return {"event_id": f"ev-{n}", "user_id": "walk-in", "item_id": f"i{n % 5}", **fields}


def test_events_are_in_the_log_when_acknowledged_and_reach_both_stores(
    region: ServedRegion, client: TestClient
) -> None:
    plane = region.platform.plane(Region.EU)
    response = post(client, region.keys["shop"], [event(n) for n in range(3)])
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 3 and response.json()["duplicates"] == 0
    assert plane.events.count(SHOP) == 3  # durable before the answer
    assert caught_up(client)
    stored = plane.offline.scoped(SHOP).stats()
    assert stored.rows - stored.ingested == 3  # beside the rows of the ingested file
    runtime = client.app.state.serving.runtime  # type: ignore[attr-defined]
    user_key = runtime.loaded_tenant("shop").pseudonymise("walk-in")
    assert runtime.online.scoped(SHOP, actor="test").recent(user_key) == ["i2", "i1", "i0"]


def test_a_repeated_event_id_is_acknowledged_as_a_duplicate_and_stored_once(
    region: ServedRegion, client: TestClient
) -> None:
    plane = region.platform.plane(Region.EU)
    key = region.keys["shop"]
    online = client.app.state.serving.runtime.online.scoped(SHOP, actor="test")  # type: ignore[attr-defined]
    before = online.item_counts(["i2", "i3"])
    first = post(client, key, [event(7, weight=2.0)])
    again = post(client, key, [event(7, weight=2.0), event(8)])
    assert first.json()["accepted"] == 1
    assert (again.json()["accepted"], again.json()["duplicates"]) == (1, 1)
    assert caught_up(client)
    stored = plane.offline.scoped(SHOP).stats()
    assert plane.events.count(SHOP) == 2 and stored.rows - stored.ingested == 2
    after = online.item_counts(["i2", "i3"])
    assert after["i2"] - before["i2"] == 2.0 and after["i3"] - before["i3"] == 1.0


@pytest.mark.parametrize(
    ("shift", "reason"),
    [(2 * 86_400, "1 day ahead"), (-6 * 365 * 86_400, "5 years old")],
)
def test_a_timestamp_outside_the_window_is_refused_naming_the_field(
    region: ServedRegion, client: TestClient, shift: float, reason: str
) -> None:
    now = time.time()
    bad = post(
        client, region.keys["shop"], [event(1, timestamp=now), event(2, timestamp=now + shift)]
    )
    assert bad.status_code == 422
    assert "'shop'" in bad.json()["detail"] and "events[1].timestamp" in bad.json()["detail"]
    assert reason in bad.json()["detail"]
    assert region.platform.plane(Region.EU).events.count(SHOP) == 0  # nothing half-written


@pytest.mark.parametrize(
    ("field", "value"),
    [("timestamp", True), ("timestamp", "1700000000"), ("weight", True), ("weight", "2")],
)
def test_json_values_of_the_wrong_type_are_refused_not_coerced(
    region: ServedRegion, client: TestClient, field: str, value: object
) -> None:
    bad = post(client, region.keys["shop"], [event(1), {**event(2), field: value}])
    assert bad.status_code == 422
    assert ["body", "events", 1, field] in [e["loc"] for e in bad.json()["detail"]]
    assert region.platform.plane(Region.EU).events.count(SHOP) == 0


def test_unknown_items_and_oversized_batches_are_refused_and_nothing_is_logged(
    region: ServedRegion, client: TestClient
) -> None:
    key = region.keys["shop"]
    unknown = post(client, key, [event(1), {**event(2), "item_id": "nope"}])
    assert unknown.status_code == 422 and "events[1].item_id" in unknown.json()["detail"]
    assert post(client, key, [event(n) for n in range(1_001)]).status_code == 422
    assert region.platform.plane(Region.EU).events.count(SHOP) == 0


def test_an_unreachable_log_answers_503_and_acknowledges_nothing(
    region: ServedRegion, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = region.platform.plane(Region.EU)

    def down(*_: object, **__: object) -> None:
        raise EventLogUnavailable("event log of region 'eu' unavailable: connection refused")

    monkeypatch.setattr(plane.events, "append", down)
    response = post(client, region.keys["shop"], [event(1)])
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "event log" in response.json()["detail"]
    monkeypatch.undo()
    assert plane.events.count(SHOP) == 0


def test_a_tenant_of_another_region_logs_nothing_here_or_at_home(
    region: ServedRegion, client: TestClient
) -> None:
    response = post(client, region.keys["far"], [event(1)])
    assert response.status_code == 421
    assert region.platform.plane(Region.EU).events.last_seq() == 0
    assert region.platform.plane(Region.US).events.last_seq() == 0
