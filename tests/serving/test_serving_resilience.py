"""The serving path under pressure: policy filter, deadlines, Redis loss, hot swap, catalog."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from conftest import FAST, ServedRegion, bearer, client_for, operator
from fastapi.testclient import TestClient
from sqlmodel import select
from test_serving_app import recs
from utils.factories import MUSIC_ITEMS

from atlasrec.dataplane.tables import Item
from atlasrec.online_store import OnlineStoreUnavailable, RedisBackend
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope

REDIS_URL = "redis://127.0.0.1:6379/13"
RULES = [
    {
        "item_id": "i1",
        "title": "Item 1 rock record",
        "category": "rock",
        "attributes": {"blocked": True},
    },
    {
        "item_id": "i4",
        "title": "Item 4 rock record",
        "category": "rock",
        "attributes": {"in_stock": "false"},
    },
    {
        "item_id": "i7",
        "title": "Item 7 rock record",
        "category": "rock",
        "attributes": {"min_age": 18},
    },
    {
        "item_id": "i10",
        "title": "Item 10 rock record",
        "category": "rock",
        "attributes": {"countries": "DE FR"},
    },
    {
        "item_id": "i13",
        "title": "Item 13 rock record",
        "category": "rock",
        "attributes": {"excluded_countries": "US"},
    },
]


def put_items(client: TestClient, key: str, items: Sequence[dict[str, Any]]) -> Any:
    response = client.put("/v1/catalog/items", json={"items": list(items)}, headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def served(client: TestClient, key: str, **body: Any) -> set[str]:
    return {i["item_id"] for i in recs(client, key, **body)["items"]}


def test_the_policy_filter_applies_every_rule(region: ServedRegion, client: TestClient) -> None:
    key = region.keys["shop"]
    put_items(client, key, RULES)
    everything = {"user_id": "user-0", "k": 30}  # the whole catalog but user-0's 6 jazz items
    plain = served(client, key, **everything)
    assert not plain & {"i1", "i4", "i7", "i10"} and "i13" in plain
    adult_de = served(client, key, **everything, context={"user_age": 30, "country": "de"})
    assert {"i7", "i10", "i13"} <= adult_de and not adult_de & {"i1", "i4"}
    minor_us = served(client, key, **everything, context={"user_age": 12, "country": "US"})
    assert not minor_us & {"i1", "i4", "i7", "i10", "i13"}
    assert len(plain) == 30 - 6 - 4
    jazz_only = served(client, key, user_id="user-1", k=5, filters={"categories": ["jazz"]})
    assert len(jazz_only) == 5 and all(int(i[1:]) % 3 == 0 for i in jazz_only)
    assert "i16" not in served(client, key, **everything, filters={"exclude_items": ["i16"]})


def test_the_policy_filter_holds_when_every_stage_is_degraded(region: ServedRegion) -> None:
    region.platform.settings.serving_budget_ms = {
        "features": 0.0,
        "retrieval": 0.0,
        "ranking": 0.0,
        "reranking": 0.0,
    }
    with client_for(region.platform, refresh=False) as client:
        key = region.keys["shop"]
        put_items(client, key, RULES)
        body = recs(client, key, user_id="user-0", k=30)
        assert body["degraded"] is True
        assert {"retrieval", "reranking"} <= set(body["degraded_stages"])
        items = {i["item_id"] for i in body["items"]}
        assert len(items) == 30 - 6 - 4 and not items & {"i1", "i4", "i7", "i10"}


class Switchable:
    """A real Redis backend that can be made to fail like an unreachable server."""

    def __init__(self, inner: RedisBackend) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise OnlineStoreUnavailable("online store unavailable: injected outage")
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def real_redis() -> Iterator[RedisBackend]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    backend = RedisBackend(REDIS_URL, timeout_s=0.05)
    yield backend
    client.flushdb()
    backend.close()


@pytest.mark.redis
def test_redis_loss_degrades_without_errors_and_recovers(
    region: ServedRegion, real_redis: RedisBackend
) -> None:
    switch = Switchable(real_redis)
    with client_for(region.platform, backend=switch, refresh=False) as client:  # type: ignore[arg-type]
        key = region.keys["shop"]
        healthy = recs(client, key, user_id="user-2", k=5)
        assert not healthy["degraded"] and not healthy["cold_start"]
        switch.down = True
        during = [
            client.post(
                "/v1/recommendations", json={"user_id": "user-2", "k": 5}, headers=bearer(key)
            )
            for _ in range(20)
        ]
        assert all(r.status_code == 200 for r in during)
        assert all("features" in r.json()["degraded_stages"] for r in during)
        # served from this process's copy of the user's history: still personalised
        assert [i["item_id"] for i in during[0].json()["items"]][:3] == [
            i["item_id"] for i in healthy["items"]
        ][:3]
        event = client.post(
            "/v1/events",
            json={"events": [{"user_id": "user-2", "item_id": "i5"}]},
            headers=bearer(key),
        )
        assert event.status_code == 202 and event.json()["online"] is False
        assert operator(client).get("/healthz/detail").json()["online_store"] == "unreachable"
        switch.down = False
        time.sleep(1.1)  # the breaker's cool-down
        after = recs(client, key, user_id="user-2", k=5)
        assert not after["degraded"]
        assert operator(client).get("/healthz/detail").json()["online_store"] == "ok"


def test_an_unreachable_redis_still_serves(region: ServedRegion) -> None:
    dead = RedisBackend("redis://127.0.0.1:1/0", timeout_s=0.05)
    with client_for(region.platform, backend=dead, refresh=False) as client:
        for user in ("user-0", "stranger"):
            body = recs(client, region.keys["shop"], user_id=user, k=5)
            assert body["degraded"] and len(body["items"]) == 5


def test_a_new_model_swaps_in_while_requests_keep_succeeding(region: ServedRegion) -> None:
    with client_for(region.platform, refresh=False) as client:
        key = region.keys["shop"]
        runtime = client.app.state.serving.runtime  # type: ignore[attr-defined]
        failures: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                r = client.post(
                    "/v1/recommendations", json={"user_id": "user-4", "k": 5}, headers=bearer(key)
                )
                if r.status_code != 200:
                    failures.append(r.status_code)
                else:
                    versions.add(r.json()["model_version"])

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            new = train_tenant(
                region.platform, "shop", actor="test", no_dp=True, config=FAST, promote=True
            )
            runtime.refresh_all()
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not failures
        assert versions == {region.versions["shop"], new.model_version}
        assert recs(client, key, user_id="user-4", k=5)["model_version"] == new.model_version


def test_a_put_item_is_recommendable_at_once_and_bad_items_write_nothing(
    region: ServedRegion, client: TestClient
) -> None:
    key = region.keys["shop"]
    started = time.perf_counter()
    put_items(
        client, key, [{"item_id": "fresh-1", "title": "Item 99 jazz record", "category": "jazz"}]
    )
    jazz_fan = served(client, key, user_id="user-0", k=30)
    assert "fresh-1" in jazz_fan
    assert time.perf_counter() - started < 5.0
    bad = client.put(
        "/v1/catalog/items",
        json={
            "items": [
                {"item_id": "ok-2", "title": "fine"},
                {"item_id": "bad-3", "title": "x", "attributes": {"min_age": "adult"}},
            ]
        },
        headers=bearer(key),
    )
    assert bad.status_code == 422
    assert bad.json()["detail"] == (
        "tenant 'shop': items[1] ('bad-3'): attribute 'min_age': "
        "'adult' is not a whole number of years"
    )
    plane = region.platform.plane(Region.EU)
    with plane.session(Scope("shop", Region.EU), actor="t", action="t") as s:
        ids = set(s.execute(select(Item.item_id)).scalars())
    assert "fresh-1" in ids and not ids & {"ok-2", "bad-3"}


def test_catalog_changes_from_another_process_arrive_by_refresh(region: ServedRegion) -> None:
    with (
        client_for(region.platform, refresh=False) as a,
        client_for(region.platform, refresh=False) as b,
    ):
        key = region.keys["shop"]
        put_items(
            a, key, [{"item_id": "elsewhere", "title": "Item 98 jazz record", "category": "jazz"}]
        )
        assert "elsewhere" not in served(b, key, user_id="user-0", k=30)
        b.app.state.serving.runtime.refresh_all()  # type: ignore[attr-defined]
        assert "elsewhere" in served(b, key, user_id="user-0", k=30)


@contextmanager
def database_locked(platform: Platform) -> Iterator[None]:
    """Another transaction holds the region database's lock (SQLite: the file; PostgreSQL:
    the items table) until the block ends."""
    plane = platform.plane(Region.EU)
    if plane.engine.dialect.name == "sqlite":
        holder = sqlite3.connect(plane.engine.url.database or "", timeout=10)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    with plane.engine.connect() as conn:
        conn.exec_driver_sql("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


def test_a_locked_database_gets_a_bounded_503_and_writes_nothing(region: ServedRegion) -> None:
    bounded = region.platform.settings.model_copy(update={"db_lock_wait_s": 0.5})
    platform = Platform(bounded)
    key = region.keys["shop"]
    item = {"item_id": "while-locked", "title": "Item 97 jazz record", "category": "jazz"}
    try:
        with client_for(platform, refresh=False) as client:
            with database_locked(platform):
                started = time.perf_counter()
                busy = client.put("/v1/catalog/items", json={"items": [item]}, headers=bearer(key))
                waited = time.perf_counter() - started
            assert busy.status_code == 503, busy.text
            assert 0.4 < waited < 3.0
            assert busy.headers["retry-after"] == "1"
            body = busy.json()
            assert body["request_id"] == busy.headers["x-request-id"]
            assert "database is busy" in body["detail"] and "'shop'" in body["detail"]
            assert "while-locked" not in served(client, key, user_id="user-0", k=30)
            put_items(client, key, [item])  # the retry, once the lock is gone
            assert "while-locked" in served(client, key, user_id="user-0", k=30)
    finally:
        platform.close()


def test_business_rules_bury_and_boost(region: ServedRegion, client: TestClient) -> None:
    key = region.keys["shop"]
    ranked = [i["item_id"] for i in recs(client, key, user_id="user-1", k=24)["items"]]
    top, last = ranked[0], ranked[-1]
    rules = {
        top: {"bury": True},
        last: {"boost": 100},
    }
    put_items(
        client,
        key,
        [
            {"item_id": item, "title": title, "category": category, "attributes": rules[item]}
            for item, title, category in MUSIC_ITEMS
            if item in rules
        ],
    )
    reranked = [i["item_id"] for i in recs(client, key, user_id="user-1", k=24)["items"]]
    assert reranked[-1] == top  # buried behind everything else
    assert reranked.index(last) < ranked.index(last)  # boosted up


@pytest.mark.redis
def test_events_update_the_real_redis_under_the_tenants_namespace(
    region: ServedRegion, real_redis: RedisBackend
) -> None:
    with client_for(region.platform, backend=real_redis, refresh=False) as client:
        key = region.keys["shop"]
        assert recs(client, key, user_id="walk-in", k=3)["cold_start"]
        now = int(time.time())
        events = [{"user_id": "walk-in", "item_id": "i2", "timestamp": now}]
        assert client.post("/v1/events", json={"events": events}, headers=bearer(key)).json()[
            "online"
        ]
        after = recs(client, key, user_id="walk-in", k=3)
        assert not after["cold_start"] and "i2" not in {i["item_id"] for i in after["items"]}
    raw = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = list(raw.scan_iter("atlasrec:eu:*"))
    tenants = ("atlasrec:eu:shop:", "atlasrec:eu:label:", "atlasrec:eu:applied:")
    assert keys and all(k.startswith(tenants) for k in keys)
    assert raw.zscore("atlasrec:eu:shop:last", "i2") == now
    assert "i2" not in set(raw.zrange("atlasrec:eu:label:items", 0, -1))


@pytest.mark.redis
def test_online_features_come_back_after_redis_loses_its_data(
    region: ServedRegion, real_redis: RedisBackend
) -> None:
    with client_for(region.platform, backend=real_redis, refresh=False) as client:
        key = region.keys["shop"]
        assert not recs(client, key, user_id="user-3", k=3)["cold_start"]
        now = int(time.time())
        events = [{"user_id": "walk-in", "item_id": f"i{n}", "timestamp": now + n} for n in (2, 4)]
        assert (
            client.post("/v1/events", json={"events": events}, headers=bearer(key)).json()[
                "accepted"
            ]
            == 2
        )
        serving = client.app.state.serving  # type: ignore[attr-defined]
        consumers = {w.consumer.name: w for w in serving.consumers}
        consumers["offline"].caught_up(10.0)
        consumers["offline"].stop()  # one event will be in the log only, not yet stored
        more = [{"user_id": "walk-in", "item_id": "i6", "timestamp": now + 6}]
        client.post("/v1/events", json={"events": more}, headers=bearer(key))
        consumers["online"].caught_up(10.0)  # i6 applied before Redis loses it, not after
        store = serving.runtime.online.scoped(Scope("shop", Region.EU), actor="test")
        user = serving.runtime.loaded_tenant("shop").pseudonymise("walk-in")
        before = (store.recent(user), store.item_counts(["i2", "i4", "i6"]))
        redis.Redis.from_url(REDIS_URL).flushdb()  # a restarted Redis that kept nothing
        assert recs(client, key, user_id="user-3", k=3)["cold_start"]
        serving.runtime.refresh_all()  # ingested rows, the offline store, then the log's tail
        assert not recs(client, key, user_id="user-3", k=3)["cold_start"]
        assert (store.recent(user), store.item_counts(["i2", "i4", "i6"])) == before
