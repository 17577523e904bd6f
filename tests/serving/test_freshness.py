"""Freshness: each tenant's signals against its SLOs, the `stale` flag, the gauges,
`atlasrec monitor status`, and the retrains of stale models."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import FAST, ServedRegion, bearer, client_for, operator
from sqlmodel import Session

from atlasrec.dataplane.tables import FederationRun
from atlasrec.drift import CHECKED, DriftReport
from atlasrec.evaluation.drift import categorical_drift
from atlasrec.eventlog.base import ConsumerLag
from atlasrec.federation.store import region_store
from atlasrec.freshness import region_freshness, version_time
from atlasrec.pipelines.monitor import monitor_status
from atlasrec.pipelines.retrain import (
    REFUSED,
    SCHEDULED,
    refused_retrains,
    retrain_stale,
    roll_out,
)
from atlasrec.pipelines.train import train_tenant
from atlasrec.releases import status as release_status
from atlasrec.tenancy import Region
from privacy.budget import BudgetExceededError

EU = Region.EU


def by_tenant(region: ServedRegion, now: float) -> dict[str, dict[str, float | None]]:
    return {
        t.tenant_id: {name: s.age_s for name, s in t.signals.items()}
        for t in region_freshness(region.platform, EU, now=now)
    }


def test_ages_are_measured_per_tenant_and_policy(
    region: ServedRegion, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = version_time(region.versions["shop"])
    assert trained is not None
    ages = by_tenant(region, now=trained + 100)
    assert set(ages) == {"shop", "label"}  # far is homed in us
    assert ages["shop"]["model"] == pytest.approx(100, abs=1e-3)
    assert ages["shop"]["backbone"] is None and ages["shop"]["federation"] is None  # solo
    assert ages["label"]["backbone"] is None  # regional, but no backbone was published yet
    assert ages["shop"]["features"] == 0.0  # nothing waits for the online store

    store = region_store(region.platform.settings, EU)
    backbone = store.publish(b"weights", metadata={"round": 1})
    finished = datetime.now(UTC) - timedelta(hours=3)
    with Session(region.platform.plane(EU).engine) as session:
        session.add(
            FederationRun(
                id="run1", region="eu", status="completed", rounds_planned=1, updated_at=finished
            )
        )
        session.commit()
    now = time.time()
    ages = by_tenant(region, now=now)
    published = version_time(backbone.version)
    assert published is not None
    assert ages["label"]["backbone"] == pytest.approx(now - published, abs=1e-3)
    assert ages["label"]["federation"] == pytest.approx(3 * 3600, abs=5)
    assert ages["shop"]["backbone"] is None  # solo: never a backbone

    plane = region.platform.plane(EU)
    scoped = plane.online.scoped(region.platform.scope("shop"), actor="t")
    scoped.record_events([("u1", "i1", 1.0, now - 900), ("u1", "i2", 1.0, now - 400)])
    assert by_tenant(region, now=now)["shop"]["features"] == 0.0  # applied, none waiting
    monkeypatch.setattr(plane.events, "lags", lambda: {"online": ConsumerLag(5, 0)})
    assert by_tenant(region, now=now)["shop"]["features"] == pytest.approx(400)


def test_slos_are_per_tenant_settings_and_breaches_are_flagged(
    region: ServedRegion, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = region.platform.settings
    monkeypatch.setattr(settings, "freshness_slo_overrides", {"shop": {"model": 60.0}})
    trained = version_time(region.versions["shop"])
    assert trained is not None
    report = {t.tenant_id: t for t in region_freshness(region.platform, EU, now=trained + 120)}
    assert report["shop"].breached == ["model"]
    assert report["shop"].signals["model"].slo_s == 60.0
    assert report["label"].breached == []
    assert report["label"].signals["model"].slo_s == settings.freshness_slo_s["model"]


def test_a_response_past_its_model_slo_says_stale_and_metrics_show_it(
    region: ServedRegion, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = region.platform.settings
    with client_for(region.platform, refresh=False) as client:
        body = {"user_id": "user-1", "k": 3}
        url = "/v1/recommendations"
        fresh = client.post(url, json=body, headers=bearer(region.keys["shop"])).json()
        assert fresh["stale"] is False
        monkeypatch.setattr(settings, "freshness_slo_overrides", {"shop": {"model": 0.001}})
        stale = client.post(url, json=body, headers=bearer(region.keys["shop"])).json()
        other = client.post(url, json=body, headers=bearer(region.keys["label"])).json()
        assert stale["stale"] is True and other["stale"] is False
        metrics = operator(client).get("/metrics").text
    age = re.search(r'freshness_age_seconds\{signal="model",tenant="shop"\} (\S+)', metrics)
    slo = re.search(r'freshness_slo_seconds\{signal="model",tenant="shop"\} (\S+)', metrics)
    assert age and slo and float(age.group(1)) > float(slo.group(1)) == 0.001
    assert 'atlasrec_freshness_slo_seconds{signal="model",tenant="label"} 604800.0' in metrics
    assert "atlasrec_online_store_up 1.0" in metrics
    assert re.search(r'atlasrec_consumer_lag_events\{consumer="online"\} \d', metrics)


def _record_drift(region: ServedRegion, model_version: str) -> None:
    shifted = categorical_drift("category_mix", ["a"] * 300, ["a"] * 100 + ["b"] * 200)
    report = DriftReport("shop", "eu", model_version, 0.0, "2026-12-06T09:00:00+00:00")
    region.platform.plane(EU).ledger.append(
        actor="test",
        action=CHECKED,
        subject="tenant:shop",
        tenant_id="shop",
        details={**report.as_json(), "signals": [shifted.as_json()]},
    )


def test_drift_of_the_live_model_is_exported_and_a_replaced_model_clears_it(
    region: ServedRegion,
) -> None:
    series = 'atlasrec_drift_detected{signal="category_mix",tenant="shop"}'
    _record_drift(region, region.versions["shop"])
    with client_for(region.platform, refresh=False) as client:
        assert f"{series} 1.0" in operator(client).get("/metrics").text
        _record_drift(region, "20250101T000000000000Z-000000")  # a check of an older model
        client.app.state.serving.freshness_read_at = 0.0  # type: ignore[attr-defined]
        assert f"{series} 0.0" in operator(client).get("/metrics").text
    status = monitor_status(region.platform, EU, actor="t")
    flags = {t["tenant_id"]: t["flags"] for t in status["tenants"]}
    assert flags["shop"] == []  # the last check was not of the live model


def test_monitor_status_flags_freshness_and_budgets(
    region: ServedRegion, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = region.platform.settings
    monkeypatch.setattr(settings, "freshness_slo_overrides", {"label": {"model": 0.001}})
    status = monitor_status(region.platform, EU, actor="test")
    tenants = {t["tenant_id"]: t for t in status["tenants"]}
    assert status["region"] == "eu" and set(tenants) == {"shop", "label"}
    assert tenants["label"]["flags"] == ["model_stale"]
    assert tenants["shop"]["flags"] == []
    assert tenants["shop"]["budget"]["spent"] == 0.0  # trained without DP
    assert all(isinstance(lag, int) for lag in status["consumers"].values())


def test_stale_models_are_retrained_budget_permitting_and_refusals_recorded_once(
    region: ServedRegion, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = region.platform
    stale = {"shop": {"model": 0.001}, "label": {"model": 0.001}}
    monkeypatch.setattr(platform.settings, "freshness_slo_overrides", stale)
    label = platform.control.get_tenant("label")
    assert platform.control.set_epsilon_cap("label", expected=label.epsilon_cap, new=0.5)
    submitted: list[str] = []

    def submit(tenant_id: str) -> str:
        submitted.append(tenant_id)
        return f"job-{tenant_id}"

    decisions = {d["tenant_id"]: d for d in retrain_stale(platform, EU, actor="t", submit=submit)}
    assert submitted == ["shop"] and decisions["shop"]["job"] == "job-shop"
    assert decisions["label"]["scheduled"] is False
    assert "0.500 left, a retrain needs 1" in decisions["label"]["reason"]
    ledger = platform.plane(EU).ledger
    assert [r.tenant_id for r in ledger.records(action=SCHEDULED)] == ["shop"]
    assert [r.tenant_id for r in ledger.records(action=REFUSED)] == ["label"]
    assert refused_retrains(platform, EU) == {"label": region.versions["label"]}

    assert retrain_stale(platform, EU, actor="t", submit=submit) == []  # once, not hourly
    assert submitted == ["shop"] and len(ledger.records(action="monitor.retrain_")) == 2

    def refused_run(tenant_id: str) -> str:
        raise BudgetExceededError(f"tenant {tenant_id!r}: DP budget exhausted")

    assert platform.control.set_epsilon_cap("label", expected=0.5, new=10.0)
    again = retrain_stale(platform, EU, actor="t", submit=refused_run)
    assert [(d["tenant_id"], d["scheduled"]) for d in again] == [("label", False)]
    assert "DP budget exhausted" in again[0]["reason"]
    assert refused_retrains(platform, EU) == {"label": region.versions["label"]}
    with client_for(platform, refresh=False) as client:
        metrics = operator(client).get("/metrics").text
    assert 'atlasrec_retrain_refused{tenant="label"} 1.0' in metrics
    assert 'atlasrec_retrain_refused{tenant="shop"} 0.0' in metrics


def test_a_retrain_is_a_candidate_whose_rollout_starts_and_blocks_the_next_retrain(
    region: ServedRegion, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = region.platform
    live = region.versions["shop"]
    retrained = train_tenant(platform, "shop", actor="t", no_dp=True, config=FAST)
    started = roll_out(platform, retrained, actor="t")
    assert started["started"] and started["state"] == "canary"
    shop = release_status(platform, "shop", actor="t")
    assert shop["live"] == live and shop["shares"]["canary"] == 5.0
    again = roll_out(platform, retrained, actor="t")  # a split is in flight: refused, kept
    assert not again["started"] and "in flight" in again["reason"]
    monkeypatch.setattr(platform.settings, "freshness_slo_overrides", {"shop": {"model": 1e-3}})
    submitted: list[str] = []
    assert retrain_stale(platform, EU, actor="t", submit=submitted.append) == []
    assert submitted == []  # not retrained again while its last retrain is being decided
