"""Experiments in serving: sticky A/B arms, interleaved lists, and the analysis deciding them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from atlasrec.dataplane.tables import ServedRequest
from atlasrec.datasets.synthetic import SyntheticTenantSpec, synthetic_truth
from atlasrec.experiment_analysis import analyse
from atlasrec.experiments import create, running, status, stop
from atlasrec.ingest import ingest
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from serving.app import create_app
from serving.arms import bucket
from simulations.clicks import (
    ClickModel,
    SimTenant,
    create_sim_tenant,
    shuffled_interactions,
    sim_folder,
    simulate,
)

SPEC = SyntheticTenantSpec(
    "sim-exp",
    Region.EU,
    SharingPolicy.SOLO,
    n_items=200,
    n_users=300,
    n_interactions=8_000,
    popularity_exponent=0.5,
)
FAST = TwoTowerConfig(dim=16, hidden=32, history=10, positives=4, negatives=16, epochs=3)


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def pair(platform: Platform, tmp_path: Path) -> Iterator[tuple[SimTenant, str, str]]:
    """A simulated tenant with a model that learned its users' tastes (live) and one that
    learned only popularity (trained after shuffled copies of the interactions)."""
    sim = create_sim_tenant(platform, SPEC, actor="test")
    good = train_tenant(platform, "sim-exp", actor="test", no_dp=True, config=FAST)
    real = sim_folder(platform, "sim-exp") / "interactions.csv"
    scope = platform.scope("sim-exp")
    noise = shuffled_interactions(real, tmp_path / "noise.csv", copies=3, seed=1)
    ingest(platform.plane(Region.EU), scope, secret=platform.secret, actor="t", interactions=noise)
    poor = train_tenant(platform, "sim-exp", actor="test", no_dp=True, config=FAST)
    yield sim, good.model_version, poor.model_version


def served(platform: Platform, experiment_id: str) -> list[ServedRequest]:
    scope = platform.scope("sim-exp")
    query = select(ServedRequest).where(ServedRequest.experiment_id == experiment_id)
    with platform.plane(Region.EU).session(scope, actor="t", action="t") as session:
        return list(session.execute(query).scalars().all())


def test_interleaving_mixes_both_lists_and_the_analysis_names_the_better_model(
    platform: Platform, pair: tuple[SimTenant, str, str]
) -> None:
    sim, good, poor = pair
    made = create(
        platform, "sim-exp", arms=[poor, good], kind="interleave", metric="ctr", actor="t"
    )
    model = ClickModel(synthetic_truth(SPEC))
    with TestClient(create_app(Region.EU, platform=platform, refresh=False)) as client:
        report = simulate(client, sim.api_key, model, requests=600)
        serving = client.app.state.serving  # type: ignore[attr-defined]
        assert all(w.caught_up(10.0) for w in serving.consumers)
    assert not report.failed and set(report.arms) == {"AB"}
    rows = served(platform, made["id"])
    assert len(rows) == 600 and all(r.arm == "AB" for r in rows)
    assert all(r.teams and len(r.teams) == len(r.items) for r in rows)
    assert 0.4 < sum(r.teams.count("A") for r in rows) / sum(len(r.teams) for r in rows) < 0.6
    decision = analyse(platform, "sim-exp")
    assert decision.decision == "decided", decision.numbers
    assert decision.numbers["winner"] == "B" and decision.numbers["wins"]["B"] > 0
    (ended,) = status(platform, "sim-exp", actor="t")["experiments"]
    assert ended["state"] == "decided" and ended["result"]["winner"] == "B"


def test_ab_users_keep_their_arm_and_every_request_records_it(
    platform: Platform, pair: tuple[SimTenant, str, str]
) -> None:
    sim, good, poor = pair
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    users = [f"c{n:06d}" for n in range(60)]
    with TestClient(create_app(Region.EU, platform=platform, refresh=False)) as client:
        for user in users[:25]:  # before the experiment: CUPED's covariate
            client.post("/v1/recommendations", json={"user_id": user}, headers=headers)
        made = create(
            platform,
            "sim-exp",
            arms=[good, poor],
            kind="ab",
            metric="ctr",
            split=[70, 30],
            actor="t",
        )
        row = running(platform.plane(Region.EU), platform.scope("sim-exp"), actor="t")
        assert row is not None
        salt = row.salt.encode()
        runtime = client.app.state.serving.runtime  # type: ignore[attr-defined]
        runtime.refresh_all()
        answers = {}
        for user in users * 2:
            body = client.post(
                "/v1/recommendations", json={"user_id": user}, headers=headers
            ).json()
            answers.setdefault(user, set()).add((body["experiment"]["arm"], body["model_version"]))
        anonymous = client.post("/v1/recommendations", json={}, headers=headers).json()
        pseudonymise = runtime.loaded_tenant("sim-exp").pseudonymise
        serving = client.app.state.serving  # type: ignore[attr-defined]
        assert all(w.caught_up(10.0) for w in serving.consumers)
    assert anonymous["experiment"] is None  # anonymous sessions are not in the experiment
    expected = {
        u: ("A", good) if bucket(salt, pseudonymise(u)) < 7_000 else ("B", poor) for u in users
    }
    assert answers == {u: {expected[u]} for u in users}  # sticky, by the keyed hash
    rows = served(platform, made["id"])
    assert len(rows) == 120 and {r.arm for r in rows} == {"A", "B"}
    decision = analyse(platform, "sim-exp")
    arms = decision.numbers["arms"]
    assert arms["A"]["users"] + arms["B"]["users"] == 60
    assert arms["A"]["users"] == sum(v[0] == "A" for v in expected.values())
    assert decision.numbers["cuped"]["covered"] == 25  # the users served before it began
    assert status(platform, "sim-exp", actor="t")["experiments"][0]["state"] == "running"
    stop(platform, "sim-exp", made["id"], reason="test over", actor="t")
