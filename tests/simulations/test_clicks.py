"""The click simulator: known preferences, position-based clicks, real requests and events."""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from atlasrec.datasets.synthetic import SyntheticTenantSpec, synthetic_truth
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.outcomes import refresh_outcomes
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from serving.app import create_app
from simulations.clicks import ClickModel, create_sim_tenant, load_sim_tenant, simulate

SPEC = SyntheticTenantSpec(
    "sim-shop", Region.EU, SharingPolicy.SOLO, n_items=80, n_users=150, n_interactions=3_000
)
FAST = TwoTowerConfig(dim=16, hidden=32, history=10, positives=4, negatives=16, epochs=3)


@pytest.fixture
def backend() -> str:
    return "sqlite"


def test_the_click_model_prefers_the_favourite_category_and_the_top_positions() -> None:
    truth = synthetic_truth(SPEC)
    model = ClickModel(truth)
    user = 0
    liked = np.flatnonzero(truth.item_category == truth.user_favorite[user])[:2].tolist()
    other = np.flatnonzero(truth.item_category != truth.user_favorite[user])[:2].tolist()
    p = model.click_probabilities(user, [liked[0], other[0], liked[1], other[1]])
    assert p[0] == pytest.approx(model.base * (1 + model.lift))
    assert p[1] == pytest.approx(model.base / 2)  # examined half the time at position 1
    assert p[2] == pytest.approx(model.base * (1 + model.lift) / 3)
    assert p[0] > p[2] > p[1] > p[3]
    assert synthetic_truth(SPEC).user_favorite.tolist() == truth.user_favorite.tolist()


def test_the_hidden_lift_rewards_the_users_segment_whatever_its_category() -> None:
    truth = synthetic_truth(dataclasses.replace(SPEC, hidden_share=0.5))
    model = ClickModel(truth, lift=0.0, hidden_lift=5.0)
    user = 3
    in_segment = truth.item_segment == truth.user_segment[user]
    in_category = truth.item_category == truth.user_favorite[user]
    hidden = int(np.flatnonzero(in_segment & ~in_category)[0])
    plain = int(np.flatnonzero(~in_segment & in_category)[0])
    p = model.click_probabilities(user, [hidden, plain])
    assert p[0] == pytest.approx(model.base * 6.0)
    assert p[1] == pytest.approx(model.base / 2)  # the category earns nothing here
    plain_tenant = synthetic_truth(SPEC)  # no hidden tastes: no segment earns a lift
    assert (plain_tenant.user_segment == -1).all()
    assert ClickModel(plain_tenant, lift=0.0).click_probabilities(user, [hidden])[0] == model.base


def test_simulated_clicks_reach_serving_as_attributed_outcomes(platform: Platform) -> None:
    create_sim_tenant(platform, SPEC, actor="test")
    sim = load_sim_tenant(platform, "sim-shop")
    version = train_tenant(platform, "sim-shop", actor="test", no_dp=True, config=FAST)
    with TestClient(create_app(Region.EU, platform=platform, refresh=False)) as client:
        report = simulate(client, sim.api_key, ClickModel(synthetic_truth(sim.spec)), requests=120)
        serving = client.app.state.serving  # type: ignore[attr-defined]
        assert all(w.caught_up(10.0) for w in serving.consumers)
    assert not report.failed
    tally = report.versions[version.model_version]
    assert tally.requests == 120 and tally.clicks > 0
    assert sum(tally.clicks_at[:3]) > sum(tally.clicks_at[7:])  # position bias
    (row,) = refresh_outcomes(platform, "sim-shop", actor="test")
    assert (row.requests, row.clicks) == (120, tally.clicks)  # every click was attributed
    assert row.conversions == tally.purchases


def test_click_propensity_is_alike_by_default_and_heavy_tailed_when_asked() -> None:
    truth = synthetic_truth(SPEC)
    assert ClickModel(truth).activity.tolist() == [1.0] * SPEC.n_users
    varied = ClickModel(truth, activity_shape=0.5).activity
    assert varied.mean() == pytest.approx(1.0, abs=0.25) and varied.std() > 1.0
    heavy = int(np.argmax(varied))
    liked = int(np.flatnonzero(truth.item_category == truth.user_favorite[heavy])[0])
    plain = ClickModel(truth).click_probabilities(heavy, [liked])[0]
    scaled = ClickModel(truth, activity_shape=0.5).click_probabilities(heavy, [liked])[0]
    assert scaled == pytest.approx(min(plain * varied[heavy], 1.0))


class Recording:
    """An HTTP stand-in that serves the same list to everyone and records what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def post(self, url: str, *, json: Any, headers: dict[str, str]) -> Any:
        with self._lock:
            self.threads.add(threading.current_thread().name)
            if url == "/v1/events":
                self.sent += [
                    (e["request_id"], f"{e['item_id']} {e['event']}") for e in json["events"]
                ]
                return SimpleNamespace(status_code=202)
            self.sent.append((json["user_id"], "asked"))
        items = [{"item_id": f"p{i:06d}"} for i in range(10)]
        body = {"items": items, "model_version": "v1", "request_id": json["user_id"]}
        return SimpleNamespace(status_code=200, json=lambda: body)


def test_concurrent_users_send_the_same_traffic_as_one_at_a_time() -> None:
    model = ClickModel(synthetic_truth(SPEC), base=0.2)
    one, many = Recording(), Recording()
    alone = simulate(one, "key", model, requests=200, seed=5)
    together = simulate(many, "key", model, requests=200, seed=5, concurrency=4)
    assert sorted(one.sent) == sorted(many.sent) and len(one.sent) > 200
    assert alone.versions["v1"].as_dict() == together.versions["v1"].as_dict()
    assert len(many.threads) > 1 and len(one.threads) == 1
