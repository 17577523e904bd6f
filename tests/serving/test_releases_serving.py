"""Serving follows the release registry: a candidate is never served; promote and rollback are."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from conftest import FAST, ServedRegion, bearer, client_for, operator
from sqlmodel import select

from atlasrec.dataplane.tables import ServedRequest
from atlasrec.models.bundle import KIND, WEIGHTS
from atlasrec.pipelines.train import train_tenant
from atlasrec.releases import advance, promote, rollback, start, status
from atlasrec.rollout_analysis import analyse
from serving.arms import LOWEST_NICE, InFlight, ShadowScorer, bucket, violations
from serving.pipeline import Query, Served, recommend
from serving.routes import recommendations


def served_version(client, key: str, user: str = "user-1") -> str:  # type: ignore[no-untyped-def]
    response = client.post("/v1/recommendations", json={"user_id": user}, headers=bearer(key))
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def test_a_candidate_is_not_served_until_promoted_and_a_rollback_swaps_back(
    region: ServedRegion,
) -> None:
    live = region.versions["shop"]
    with client_for(region.platform, refresh=False) as client:
        runtime = client.app.state.serving.runtime  # type: ignore[attr-defined]
        key = region.keys["shop"]
        trained = train_tenant(region.platform, "shop", actor="test", no_dp=True, config=FAST)
        assert trained.release == "candidate"
        runtime.refresh_all()
        assert served_version(client, key) == live
        promote(region.platform, "shop", reason="test", actor="test")
        runtime.refresh_all()
        assert served_version(client, key) == trained.model_version
        rollback(region.platform, "shop", reason="test", actor="test")
        runtime.refresh_all()
        assert served_version(client, key) == live


def test_canary_users_are_a_sticky_keyed_hash_share_that_grows_with_the_steps(
    region: ServedRegion,
) -> None:
    live = region.versions["shop"]
    trained = train_tenant(region.platform, "shop", actor="test", no_dp=True, config=FAST)
    plan = start(region.platform, "shop", actor="test", canary_steps=[30, 60, 100])["plan"]
    users = [f"user-{n}" for n in range(60)]
    with client_for(region.platform, refresh=False) as client:
        runtime = client.app.state.serving.runtime  # type: ignore[attr-defined]
        key = region.keys["shop"]
        served = {u: served_version(client, key, u) for u in users}
        pseudonymise = runtime.loaded_tenant("shop").pseudonymise
        salt = plan["salt"].encode()
        expected = {u: bucket(salt, pseudonymise(u)) < 3_000 for u in users}
        assert {u: v == trained.model_version for u, v in served.items()} == expected
        metrics = operator(client).get("/metrics").text
        canaries = float(sum(expected.values()))
        assert f'atlasrec_arm_requests_total{{arm="canary",tenant="shop"}} {canaries}' in metrics
        assert set(served.values()) == {live, trained.model_version}  # both arms serve
        assert all(served_version(client, key, u) == served[u] for u in users[:10])  # sticky
        advance(region.platform, "shop", reason="step held", actor="test")
        runtime.refresh_all()
        grown = {u: served_version(client, key, u) == trained.model_version for u in users}
        assert all(grown[u] for u in users if expected[u])  # canary users stay in the canary
        assert sum(grown.values()) > sum(expected.values())


def test_shadow_scores_a_share_off_the_path_and_never_returns_it(region: ServedRegion) -> None:
    live = region.versions["shop"]
    trained = train_tenant(region.platform, "shop", actor="test", no_dp=True, config=FAST)
    start(region.platform, "shop", actor="test", shadow_percent=100)
    with client_for(region.platform, refresh=False) as client:
        serving = client.app.state.serving  # type: ignore[attr-defined]
        answers = [served_version(client, region.keys["shop"], f"user-{n}") for n in range(8)]
        assert answers == [live] * 8  # shadow answers are never returned
        assert serving.shadow.idle()
        assert serving.request_log.flush()
        assert all(w.caught_up(10.0) for w in serving.consumers)
        metrics = operator(client).get("/metrics").text
    assert 'atlasrec_shadow_total{outcome="scored",tenant="shop"} 8.0' in metrics
    assert 'atlasrec_shadow_policy_violations_total{tenant="shop"} 0.0' in metrics
    scope = region.platform.scope("shop")
    with region.platform.plane(scope.region).session(scope, actor="t", action="t") as session:
        rows = session.execute(select(ServedRequest)).scalars().all()
    shadows = [r for r in rows if r.arm == "shadow"]
    lives = {r.request_id for r in rows if r.arm == "live"}
    assert len(shadows) == 8 and {r.shadow_of for r in shadows} == lives
    assert sum(r.policy_violations for r in shadows) == 0
    assert {r.model_version for r in shadows} == {trained.model_version}


def test_shadow_scoring_waits_until_no_live_request_is_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scored_at: list[float] = []

    def candidate(*_: object, **__: object) -> Served:
        scored_at.append(time.monotonic())
        return Served([], "v2", False, [], {"total": 1.0})

    monkeypatch.setattr("serving.arms.recommend", candidate)
    in_flight, kept = InFlight(), []
    shadow = ShadowScorer(
        {}, lambda _, r: kept.append(r), lambda _, h: h, lambda *_: None, in_flight
    )
    runtime = SimpleNamespace(scope=SimpleNamespace(tenant_id="shop"), online=None, state=None)
    arms = SimpleNamespace(state=None, version="v2")
    live = Served([], "v1", False, [], {"total": 1.0})
    with in_flight.serving():
        shadow.submit(runtime, arms, Query(user_key="u", k=3), live, "r1")  # type: ignore[arg-type]
        time.sleep(0.2)
        assert scored_at == []  # a live request is being served: the shadow waits
        ended = time.monotonic()
    assert shadow.idle(5.0) and len(scored_at) == 1 and scored_at[0] >= ended
    assert kept[0].shadow_of == "r1"
    assert in_flight.wait_idle(0.0)  # idle now
    shadow.close()


def test_shadow_scoring_runs_at_the_lowest_cpu_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    niceness: list[int] = []

    def candidate(*_: object, **__: object) -> Served:
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return Served([], "v2", False, [], {"total": 1.0})

    monkeypatch.setattr("serving.arms.recommend", candidate)
    shadow = ShadowScorer({}, lambda *_: None, lambda _, h: h, lambda *_: None, InFlight())
    runtime = SimpleNamespace(scope=SimpleNamespace(tenant_id="shop"), online=None, state=None)
    live = Served([], "v1", False, [], {"total": 1.0})
    arms = SimpleNamespace(state=None, version="v2")
    shadow.submit(runtime, arms, Query(user_key="u", k=3), live, "r1")  # type: ignore[arg-type]
    assert shadow.idle(5.0)
    shadow.close()
    assert niceness == [LOWEST_NICE]  # the live requests' threads keep their own
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < LOWEST_NICE


def test_a_scoring_paused_between_stages_counts_no_pause_toward_stages_or_budgets(
    region: ServedRegion,
) -> None:
    with client_for(region.platform, refresh=False) as client:
        served_version(client, region.keys["shop"])
        tenant = client.app.state.serving.runtime.loaded_tenant("shop")  # type: ignore[attr-defined]
    query = Query(user_key=tenant.pseudonymise("user-1"), k=5)
    budgets = {"features": 150.0, "retrieval": 150.0, "ranking": 150.0, "reranking": 150.0}
    paused: list[float] = []

    def pause() -> None:  # longer than any stage's budget
        paused.append(time.monotonic())
        time.sleep(0.2)

    served = recommend(tenant.state, tenant.online, query, budgets, pause=pause)
    assert len(paused) == 5  # after each stage
    assert served.degraded == [] and len(served.items) == 5
    assert served.timings_ms["total"] < 200.0  # the pauses (1 s) count toward nothing
    assert all(served.timings_ms[s] < 200.0 for s in ("features", "retrieval", "ranking"))
    unpaused = recommend(tenant.state, tenant.online, query, budgets)
    assert unpaused.items == served.items


def test_the_policy_recheck_counts_what_the_context_forbids(region: ServedRegion) -> None:
    with client_for(region.platform, refresh=False) as client:
        served_version(client, region.keys["shop"])
        state = client.app.state.serving.runtime.loaded_tenant("shop").state  # type: ignore[attr-defined]
    some = list(state.item_ids[:3])
    query = Query(user_key=None, k=3, exclude_items=frozenset(some[:1]))
    assert violations(state, query, some) == 1
    assert violations(state, query, [*some[1:], "not-in-the-catalog"]) == 1


def shadow_traffic(region: ServedRegion, requests: int) -> None:
    """`requests` live answers, each also scored in shadow; recorded and stored."""
    with client_for(region.platform, refresh=False) as client:
        serving = client.app.state.serving  # type: ignore[attr-defined]
        for n in range(requests):
            served_version(client, region.keys["shop"], f"user-{n}")
        assert serving.shadow.idle() and serving.request_log.flush()
        assert all(w.caught_up(10.0) for w in serving.consumers)


def test_the_analysis_advances_a_healthy_shadow_and_rolls_back_a_failing_one(
    region: ServedRegion, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_tenant(region.platform, "shop", actor="test", no_dp=True, config=FAST)
    start(region.platform, "shop", actor="test", shadow_percent=100, min_requests=6)
    shadow_traffic(region, 3)
    assert analyse(region.platform, "shop").decision == "wait"
    shadow_traffic(region, 4)
    decision = analyse(region.platform, "shop")
    assert decision.decision == "advance", decision
    assert decision.numbers["requests"] == 7 and decision.numbers["policy_violations"] == 0
    assert status(region.platform, "shop", actor="t")["shares"]["canary"] == 5

    bad = train_tenant(region.platform, "shop", actor="test", no_dp=True, config=FAST)
    rollback(region.platform, "shop", reason="make way", actor="test")
    start(region.platform, "shop", actor="test", version=bad.model_version, shadow_percent=100)

    def broken(*_: object) -> None:
        raise RuntimeError("the candidate fails on every request")

    monkeypatch.setattr("serving.arms.recommend", broken)  # the shadow path only
    shadow_traffic(region, 25)
    decision = analyse(region.platform, "shop")
    assert decision.decision == "rollback" and "error share" in decision.reason
    assert status(region.platform, "shop", actor="t")["live"] == region.versions["shop"]
    with client_for(region.platform, refresh=False) as client:
        metrics = operator(client).get("/metrics").text
    assert 'atlasrec_release_rolled_back{tenant="shop"} 1.0' in metrics  # it alerts
    assert 'atlasrec_release_in_flight_seconds{tenant="shop"} 0.0' in metrics


def test_no_request_fails_across_start_every_step_promote_and_rollback(
    region: ServedRegion,
) -> None:
    """Many users hammer the tenant while its release goes through every transition."""
    candidate = train_tenant(region.platform, "shop", actor="test", no_dp=True, config=FAST)
    with client_for(region.platform, refresh=False) as client:
        runtime = client.app.state.serving.runtime  # type: ignore[attr-defined]
        key = region.keys["shop"]
        failures: list[str] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer(worker: int) -> None:
            n = 0
            while not stop.is_set():
                body = {"user_id": f"user-{worker}-{n % 40}", "k": 5}
                r = client.post("/v1/recommendations", json=body, headers=bearer(key))
                if r.status_code == 200:
                    versions.add(r.json()["model_version"])
                else:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                n += 1

        def step(change: Callable[[], object]) -> None:
            change()
            runtime.refresh_all()
            time.sleep(0.2)

        threads = [threading.Thread(target=hammer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        try:
            platform = region.platform
            step(lambda: start(platform, "shop", actor="t", shadow_percent=50))
            for _ in range(4):  # shadow -> 5 -> 25 -> 50 -> 100%
                step(lambda: advance(platform, "shop", reason="test", actor="t"))
            step(lambda: advance(platform, "shop", reason="test", actor="t"))  # live
            step(lambda: rollback(platform, "shop", reason="test", actor="t"))
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not failures
        assert versions == {region.versions["shop"], candidate.model_version}
        assert runtime.loaded_tenant("shop").state.model_version == region.versions["shop"]


def test_a_failing_canary_never_fails_a_request_and_is_rolled_back(
    region: ServedRegion, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = region.versions["shop"]
    candidate = train_tenant(region.platform, "shop", actor="test", no_dp=True, config=FAST)
    start(region.platform, "shop", actor="test", canary_steps=[100], min_requests=10)
    real = recommendations.recommend

    def failing(state, *args, **kwargs):  # type: ignore[no-untyped-def]
        if state.model_version == candidate.model_version:
            raise RuntimeError("the candidate fails on every request")
        return real(state, *args, **kwargs)

    monkeypatch.setattr(recommendations, "recommend", failing)
    with client_for(region.platform, refresh=False) as client:
        serving = client.app.state.serving  # type: ignore[attr-defined]
        key = region.keys["shop"]
        for n in range(25):
            response = client.post(
                "/v1/recommendations", json={"user_id": f"user-{n}"}, headers=bearer(key)
            )
            assert response.status_code == 200
            body = response.json()
            assert body["model_version"] == live and body["degraded_stages"] == ["candidate"]
        assert serving.request_log.flush() and all(w.caught_up(10.0) for w in serving.consumers)
    decision = analyse(region.platform, "shop")
    assert decision.decision == "rollback" and decision.numbers["error_share"] == 1.0
    assert status(region.platform, "shop", actor="t")["live"] == live


def test_a_candidate_serving_cannot_load_is_recorded_and_rolled_back(
    region: ServedRegion,
) -> None:
    live = region.versions["shop"]
    candidate = train_tenant(region.platform, "shop", actor="test", no_dp=True, config=FAST)
    start(region.platform, "shop", actor="test", canary_steps=[50, 100])
    scope = region.platform.scope("shop")
    artifacts = region.platform.plane(scope.region).artifacts
    path = artifacts.get(scope, KIND, candidate.model_version, actor="t").path
    (path / WEIGHTS).write_bytes(b"damaged after the gates passed")
    with client_for(region.platform, refresh=False) as client:
        runtime = client.app.state.serving.runtime  # type: ignore[attr-defined]
        assert runtime.loaded_tenant("shop").arms is None  # live serves everyone
        answers = {served_version(client, region.keys["shop"], f"user-{n}") for n in range(20)}
        runtime.refresh_all()  # a second attempt is not recorded twice
    assert answers == {live}
    records = region.platform.plane(scope.region).ledger.records(action="release.unservable")
    assert [json.loads(r.details)["version"] for r in records] == [candidate.model_version]
    decision = analyse(region.platform, "shop")
    assert decision.decision == "rollback" and "cannot load" in decision.reason
