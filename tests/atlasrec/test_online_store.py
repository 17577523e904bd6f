"""The online feature store: one contract for both backends, tenant isolation, boundary."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.boundary import REFUSED
from atlasrec.errors import ConfigError, CrossRegionError, InvalidInputError
from atlasrec.online_store import (
    APPLIED_BLOCK,
    MemoryBackend,
    OnlineBackend,
    OnlineStore,
    OnlineStoreUnavailable,
    RedisBackend,
    ScopedOnlineStore,
    make_backend,
)
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope, SharingPolicy

REDIS_URL = os.environ.get("ATLASREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RUN_NAMESPACE = f"atlasrec-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
_namespaces = itertools.count()

US_TENANTS = ("t-a", "t-b", "t-c")
TENANTS = [*((Region.US, t) for t in US_TENANTS), (Region.EU, "t-eu")]


def fresh_namespace() -> str:
    """A namespace of its own for each store under test (keys never collide across tests)."""
    return f"{RUN_NAMESPACE}-{next(_namespaces)}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A real embedded platform with three US tenants and one EU tenant."""
    platform = Platform(Settings(home=tmp_path_factory.mktemp("online-store")))
    for region, tenant in TENANTS:
        platform.create_tenant(tenant, region=region, sharing=SharingPolicy.REGIONAL, actor="test")
    yield platform
    platform.close()


def open_stores(
    world: Platform, backend: OnlineBackend, namespace: str
) -> dict[str, ScopedOnlineStore]:
    """A scoped store for every tenant, all sharing one backend and namespace."""
    stores = {
        region: OnlineStore(region, backend, world.plane(region).boundary, namespace=namespace)
        for region in {r for r, _ in TENANTS}
    }
    return {t: stores[r].scoped(Scope(t, r), actor="test") for r, t in TENANTS}


# Ids built from characters that try to escape a key's sub-namespace, plus any UTF-8 text.
HOSTILE = st.text(alphabet=st.sampled_from(list("ab:*%?[]\\é日 ")), max_size=4)
IDS = st.one_of(HOSTILE, st.text(alphabet=st.characters(codec="utf-8"), max_size=5))
TENANT = st.sampled_from([t for _, t in TENANTS])
JSON_VALUES = st.one_of(
    st.integers(-5, 5), st.text(max_size=3), st.lists(st.integers(0, 9), max_size=2)
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), TENANT, HOSTILE, st.lists(IDS, max_size=3), st.integers(1, 4)),
        st.tuples(
            st.just("incr"), TENANT, st.dictionaries(HOSTILE, st.integers(-3, 3), max_size=3)
        ),
        st.tuples(st.just("set"), TENANT, IDS, JSON_VALUES),
        st.tuples(st.just("clear"), TENANT),
    ),
    max_size=15,
)


class Model:
    """What each tenant should read back."""

    def __init__(self) -> None:
        self.recent: dict[str, dict[str, list[str]]] = {t: {} for _, t in TENANTS}
        self.counts: dict[str, dict[str, float]] = {t: {} for _, t in TENANTS}
        self.json: dict[str, dict[str, Any]] = {t: {} for _, t in TENANTS}
        self.users: set[str] = set()
        self.items: set[str] = set()
        self.names: set[str] = set()

    def check(self, stores: dict[str, ScopedOnlineStore]) -> None:
        """Every tenant reads exactly its own values, for every id any tenant ever used."""
        for tenant, store in stores.items():
            for user in self.users:
                assert store.recent(user, n=10) == self.recent[tenant].get(user, []), (tenant, user)
            expected = {i: self.counts[tenant].get(i, 0.0) for i in self.items}
            assert store.item_counts(sorted(self.items)) == expected, tenant
            for name in self.names:
                assert store.get_json(name) == self.json[tenant].get(name), (tenant, name)


class OnlineStoreContract:
    """Behaviour every backend must show; subclasses provide `online_backend`."""

    max_examples: ClassVar[int] = 30

    @pytest.fixture
    def online_backend(self) -> Iterator[OnlineBackend]:
        raise NotImplementedError

    @pytest.fixture
    def namespace(self) -> str:
        return fresh_namespace()

    @pytest.fixture
    def stores(
        self, world: Platform, online_backend: OnlineBackend, namespace: str
    ) -> dict[str, ScopedOnlineStore]:
        return open_stores(world, online_backend, namespace)

    def test_recent_is_most_recent_first_and_capped(
        self, stores: dict[str, ScopedOnlineStore]
    ) -> None:
        store = stores["t-a"]
        assert store.recent("u1") == []
        store.push_recent("u1", ["i1", "i2", "i3"])
        store.push_recent("u1", ["i4"])
        store.push_recent("u1", [])
        assert store.recent("u1") == ["i4", "i3", "i2", "i1"]
        assert store.recent("u1", n=2) == ["i4", "i3"]
        assert store.recent("u1", n=0) == []
        store.push_recent("u2", [f"x{i}" for i in range(10)], cap=3)
        assert store.recent("u2") == ["x9", "x8", "x7"]
        store.push_recent("u2", ["y"], cap=3)
        assert store.recent("u2") == ["y", "x9", "x8"]
        store.push_recent("u2", [], cap=2)  # a smaller cap trims with nothing pushed
        assert store.recent("u2") == ["y", "x9"]
        assert store.recent("u1") == ["i4", "i3", "i2", "i1"]

    def test_counters_add_up(self, stores: dict[str, ScopedOnlineStore]) -> None:
        store = stores["t-a"]
        store.incr_items({"a": 1, "b": 2.5})
        store.incr_items({"a": 0.5, "c:*": -1})
        store.incr_items({})
        assert store.item_counts(["a", "b", "c:*", "never"]) == {
            "a": 1.5,
            "b": 2.5,
            "c:*": -1.0,
            "never": 0.0,
        }
        assert store.item_counts([]) == {}
        assert stores["t-b"].item_counts(["a"]) == {"a": 0.0}

    def test_events_update_history_counters_and_last_seen_at_once(
        self, stores: dict[str, ScopedOnlineStore]
    ) -> None:
        store = stores["t-a"]
        store.record_events(
            [("u1", "a", 1.0, 100.0), ("u1", "b", 2.0, 300.0), ("u2", "a", 0.5, 200.0)], cap=2
        )
        store.record_events([("u1", "c", 1.0, 50.0)], cap=2)
        assert store.recent("u1") == ["c", "b"] and store.recent("u2") == ["a"]
        assert store.item_counts(["a", "b", "c", "z"]) == {"a": 1.5, "b": 2.0, "c": 1.0, "z": 0.0}
        # last-seen only moves forward, whatever order events arrive in
        assert store.item_last_seen(["a", "b", "c", "z"]) == {
            "a": 200.0,
            "b": 300.0,
            "c": 50.0,
            "z": None,
        }
        assert store.top_items(2) == [("b", 2.0), ("a", 1.5)]
        assert stores["t-b"].top_items(5) == [] and stores["t-b"].recent("u1") == []
        with pytest.raises(InvalidInputError, match="finite"):
            store.record_events([("u1", "a", float("inf"), 1.0)])

    def test_logged_events_apply_once_by_sequence_number(
        self, stores: dict[str, ScopedOnlineStore]
    ) -> None:
        store = stores["t-a"]
        events = [("u1", "a", 1.0, 100.0), ("u1", "b", 2.0, 300.0)]
        assert store.record_logged(events, [7, 8], log_id="L1", cap=5) == 2
        assert store.record_logged(events, [7, 8], log_id="L1", cap=5) == 0  # a redelivery
        later = [events[1], ("u2", "c", 1.0, 5.0)]
        assert store.record_logged(later, [8, APPLIED_BLOCK + 8], log_id="L1", cap=5) == 1
        assert store.recent("u1") == ["b", "a"] and store.recent("u2") == ["c"]
        assert store.item_counts(["a", "b", "c"]) == {"a": 1.0, "b": 2.0, "c": 1.0}
        assert store.item_last_seen(["b", "c"]) == {"b": 300.0, "c": 5.0}
        assert store.record_logged([("u1", "d", 1.0, 1.0)], [9], log_id="L1", cap=1) == 1
        assert store.recent("u1") == ["d"]  # the cap still holds
        # a new log (its sequence numbers start again) is not mistaken for the old one
        assert store.record_logged([("u3", "a", 1.0, 1.0)], [7], log_id="L2", cap=5) == 1

    def test_marked_batches_apply_once(self, stores: dict[str, ScopedOnlineStore]) -> None:
        store = stores["t-a"]
        chunk = [("u1", "a", 1.0, 100.0), ("u1", "b", 2.0, 300.0)]
        assert store.record_marked(chunk, "date=2024-01-01/ingest-x.parquet", 0, cap=5) == 1
        assert store.record_marked(chunk, "date=2024-01-01/ingest-x.parquet", 0, cap=5) == 0
        assert store.record_marked(chunk[:1], "date=2024-01-01/ingest-x.parquet", 1) == 1
        assert store.item_counts(["a", "b"]) == {"a": 2.0, "b": 2.0}
        assert stores["t-b"].record_marked(chunk, "date=2024-01-01/ingest-x.parquet", 0) == 1
        with pytest.raises(InvalidInputError):
            store.record_marked(chunk, "m", -1)

    def test_a_claim_is_granted_once_until_released(
        self, stores: dict[str, ScopedOnlineStore]
    ) -> None:
        assert stores["t-a"].claim("warm") and not stores["t-a"].claim("warm")
        assert stores["t-b"].claim("warm")  # claims are per tenant
        stores["t-a"].release("warm")
        assert stores["t-a"].claim("warm", ttl_s=0.05)
        time.sleep(0.1)
        assert stores["t-a"].claim("warm")

    def test_json_round_trips_and_expires(self, stores: dict[str, ScopedOnlineStore]) -> None:
        store = stores["t-a"]
        assert store.get_json("cfg") is None
        store.set_json("cfg", {"k": [1, "x", None], "é": 2.5})
        assert store.get_json("cfg") == {"k": [1, "x", None], "é": 2.5}
        store.set_json("fresh", [1, 2], ttl_s=0.5)
        assert store.get_json("fresh") == [1, 2]
        time.sleep(0.7)
        assert store.get_json("fresh") is None
        assert store.get_json("cfg") == {"k": [1, "x", None], "é": 2.5}
        store.set_json("gone", 1, ttl_s=0.05)
        time.sleep(0.1)
        assert store.clear() == 1  # the expired key is neither listed nor counted

    def test_clear_removes_only_own_keys(
        self, world: Platform, stores: dict[str, ScopedOnlineStore], online_backend: OnlineBackend
    ) -> None:
        for store in stores.values():
            store.push_recent("u", ["i"])
            store.incr_items({"i": 1})
            store.set_json("n", 1)
            store.set_json("short", 1, ttl_s=60)
        other = open_stores(world, online_backend, fresh_namespace())["t-a"]
        other.set_json("n", "other namespace")
        assert stores["t-a"].clear() == 4
        assert stores["t-a"].recent("u") == []
        assert stores["t-a"].item_counts(["i"]) == {"i": 0.0}
        assert stores["t-a"].get_json("n") is None
        assert stores["t-a"].clear() == 0
        for tenant in ("t-b", "t-c", "t-eu"):
            assert stores[tenant].recent("u") == ["i"]
            assert stores[tenant].item_counts(["i"]) == {"i": 1.0}
            assert stores[tenant].get_json("n") == 1
        assert other.get_json("n") == "other namespace"
        other.clear()

    def test_hostile_ids_stay_inside_the_tenant_prefix(
        self,
        stores: dict[str, ScopedOnlineStore],
        online_backend: OnlineBackend,
        namespace: str,
    ) -> None:
        store = stores["t-a"]
        hostile = ["x:y", ":", "*", "../t-b:recent:u", "t-b", "%3A", "日本:*?[]\\"]
        for value in hostile:
            store.push_recent(value, [value])
            store.set_json(value, value)
        store.incr_items(dict.fromkeys(hostile, 1))
        keys = list(online_backend.scan_prefix(namespace + ":"))
        assert keys and all(k.startswith(f"{namespace}:us:t-a:") for k in keys)
        assert all(k.count(":") <= 4 for k in keys), keys
        for value in hostile:
            assert store.recent(value) == [value]
            assert store.get_json(value) == value
            assert stores["t-b"].recent(value) == []
        assert store.clear() == 2 * len(hostile) + 1

    def test_invalid_inputs_are_refused(self, stores: dict[str, ScopedOnlineStore]) -> None:
        store = stores["t-a"]
        with pytest.raises(InvalidInputError):
            store.push_recent("u", ["i"], cap=0)
        with pytest.raises(InvalidInputError):
            store.recent("u", n=-1)
        with pytest.raises(InvalidInputError):
            store.set_json("n", 1, ttl_s=0)
        with pytest.raises(InvalidInputError):
            store.set_json("n", {1, 2})
        with pytest.raises(InvalidInputError):
            store.incr_items({"i": float("nan")})
        with pytest.raises(InvalidInputError):
            store.push_recent("\ud800", ["i"])
        assert store.recent("u") == []

    def test_tenants_never_read_each_other(
        self, world: Platform, online_backend: OnlineBackend
    ) -> None:
        @settings(max_examples=self.max_examples, deadline=None)
        @given(ops=OPS)
        def run(ops: list[tuple[Any, ...]]) -> None:
            stores = open_stores(world, online_backend, fresh_namespace())
            model = Model()
            try:
                for op, tenant, *args in ops:
                    if op == "push":
                        user, items, cap = args
                        stores[tenant].push_recent(user, items, cap=cap)
                        old = model.recent[tenant].get(user, [])
                        model.recent[tenant][user] = [*reversed(items), *old][:cap]
                        model.users.add(user)
                        model.items.update(items)
                    elif op == "incr":
                        (weights,) = args
                        stores[tenant].incr_items(weights)
                        for item, weight in weights.items():
                            counts = model.counts[tenant]
                            counts[item] = counts.get(item, 0.0) + weight
                        model.items.update(weights)
                    elif op == "set":
                        name, value = args
                        stores[tenant].set_json(name, value)
                        model.json[tenant][name] = value
                        model.names.add(name)
                    else:
                        stores[tenant].clear()
                        model.recent[tenant].clear()
                        model.counts[tenant].clear()
                        model.json[tenant].clear()
                        model.check(stores)
                model.check(stores)
            finally:
                for store in stores.values():
                    store.clear()

        run()


class TestMemory(OnlineStoreContract):
    max_examples = 100

    @pytest.fixture
    def online_backend(self) -> Iterator[OnlineBackend]:
        backend = MemoryBackend()
        yield backend
        backend.close()


@pytest.mark.redis
class TestRedis(OnlineStoreContract):
    max_examples = 30

    @pytest.fixture
    def online_backend(self) -> Iterator[OnlineBackend]:
        backend = RedisBackend(REDIS_URL)
        try:
            backend.ping()
        except OnlineStoreUnavailable as exc:  # a clear failure, never a silent skip
            pytest.fail(f"Redis at {REDIS_URL} is not reachable: {exc}")
        yield backend
        backend.delete(list(backend.scan_prefix(RUN_NAMESPACE)))  # only this run's keys
        backend.close()


def test_scope_of_a_tenant_homed_elsewhere_is_refused_and_audited(tmp_path: Path) -> None:
    platform = Platform(Settings(home=tmp_path))
    try:
        platform.create_tenant(
            "t-eu", region=Region.EU, sharing=SharingPolicy.REGIONAL, actor="test"
        )
        platform.create_tenant(
            "t-us", region=Region.US, sharing=SharingPolicy.REGIONAL, actor="test"
        )
        us = platform.plane(Region.US)
        store = OnlineStore(Region.US, MemoryBackend(), us.boundary)
        with pytest.raises(CrossRegionError, match="homed in region 'eu'"):
            store.scoped(Scope("t-eu", Region.US), actor="test")
        with pytest.raises(CrossRegionError):
            store.scoped(Scope("t-eu", Region.EU), actor="test")
        refusals = [json.loads(r.details) for r in us.ledger.records(action=REFUSED)]
        assert [(r["scope_tenant"], r["attempted"], r["error"]) for r in refusals] == [
            ("t-eu", "online_store.open", "CrossRegionError"),
            ("t-eu", "online_store.open", "CrossRegionError"),
        ]
        assert platform.plane(Region.EU).ledger.records(action=REFUSED) == []
        scoped = store.scoped(Scope("t-us", Region.US), actor="test")
        scoped.set_json("ok", True)
        assert scoped.get_json("ok") is True
        with pytest.raises(ConfigError):
            OnlineStore(Region.EU, MemoryBackend(), us.boundary)
    finally:
        platform.close()


@pytest.mark.redis
def test_unreachable_redis_fails_fast_with_a_typed_error() -> None:
    backend = RedisBackend("redis://127.0.0.1:1/0")
    started = time.monotonic()
    with pytest.raises(OnlineStoreUnavailable, match=r"^online store unavailable: .*:1/0"):
        backend.get("atlasrec:us:t-a:json:x")
    with pytest.raises(OnlineStoreUnavailable):
        backend.push_trim("atlasrec:us:t-a:recent:u", ["i"], 5)
    with pytest.raises(OnlineStoreUnavailable) as failure:
        backend.ping()
    assert time.monotonic() - started < 3
    assert "\n" not in str(failure.value)
    backend.close()


def _withholding_proxy(server: socket.socket, upstream: tuple[str, int]) -> None:
    """Forward each connection to Redis, but withhold every reply after a transaction."""

    def pump(source: socket.socket, sink: socket.socket, held: list[bool], client: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if client and b"EXEC" in chunk:
                    held.append(True)  # the transaction runs; its reply never arrives
                if client or not held:
                    sink.sendall(chunk)

    with contextlib.suppress(OSError):
        while True:
            near, _ = server.accept()
            far = socket.create_connection(upstream)
            held: list[bool] = []
            for args in ((near, far, held, True), (far, near, held, False)):
                threading.Thread(target=pump, args=args, daemon=True).start()


@pytest.mark.redis
def test_a_write_whose_reply_times_out_is_not_run_twice() -> None:
    """A timed-out LPUSH or ZINCRBY may have run: retrying it would count it twice."""
    direct = RedisBackend(REDIS_URL)
    url = urlparse(REDIS_URL)
    key = f"{RUN_NAMESPACE}-timeout"
    with socket.create_server(("127.0.0.1", 0)) as server:
        upstream = (url.hostname or "127.0.0.1", url.port or 6379)
        threading.Thread(target=_withholding_proxy, args=(server, upstream), daemon=True).start()
        port = server.getsockname()[1]
        proxied = RedisBackend(f"redis://127.0.0.1:{port}{url.path}", timeout_s=0.3)
        with pytest.raises(OnlineStoreUnavailable, match=r"(?i)timeout|timed out"):
            proxied.push_trim(f"{key}:recent", ["i"], 5)
        with pytest.raises(OnlineStoreUnavailable):
            proxied.zset_update(f"{key}:items", {"i": 1.0})
        proxied.close()
    try:
        assert direct.list_range(f"{key}:recent", 5) == ["i"]  # it ran, once
        assert direct.zset_scores(f"{key}:items", ["i"]) == [1.0]
    finally:
        direct.delete([f"{key}:recent", f"{key}:items"])
        direct.close()


def test_make_backend_picks_memory_or_redis() -> None:
    assert isinstance(make_backend(None), MemoryBackend)
    backend = make_backend(REDIS_URL)
    assert isinstance(backend, RedisBackend)
    backend.close()


@pytest.mark.redis
def test_region_data_plane_uses_the_configured_redis(tmp_path: Path) -> None:
    platform = Platform(Settings(home=tmp_path, redis_url=REDIS_URL))
    try:
        platform.create_tenant("t-plane", region=Region.SG, sharing=SharingPolicy.SOLO, actor="t")
        plane = platform.plane(Region.SG)
        assert isinstance(plane.online.backend, RedisBackend)
        store = plane.online.scoped(Scope("t-plane", Region.SG), actor="t")
        store.clear()
        store.push_recent("u1", ["i1", "i2"])
        again = Platform(Settings(home=tmp_path, redis_url=REDIS_URL))  # another process's view
        try:
            view = again.plane(Region.SG).online.scoped(Scope("t-plane", Region.SG), actor="t")
            assert view.recent("u1") == ["i2", "i1"]
        finally:
            again.close()
        store.clear()
    finally:
        platform.close()
