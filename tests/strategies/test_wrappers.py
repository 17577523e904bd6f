"""The aggregator's strategy wrappers, driven by scripted Flower clients (no training).

The clients here answer the roster query and the train message with whatever a test wants
them to claim, so the guards are tested against lying or broken clients, and the
encrypted sum is checked against the exact plaintext one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlasrec.federation.store import key_service, region_domain, region_store
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, SharingPolicy
from privacy import he
from server import global_tier
from server.embedded import node_id
from server.federation import FederationConfig, run_federation
from server.local_grid import LocalGrid
from simulations.scripted import Script, run_scripted, scripted_app
from strategies.round_state import Contribution
from tests.utils.factories import make_tenant


@dataclass(frozen=True)
class Entry:
    tenant_id: str | None
    details: dict[str, Any]


def actions(platform: Platform, region: Region, prefix: str) -> list[Entry]:
    records = platform.plane(region).ledger.records(action=prefix, limit=None)
    return [Entry(r.tenant_id, json.loads(r.details)) for r in records]


@pytest.fixture
def eu(platform: Platform) -> Platform:
    make_tenant(platform, "shop", Region.EU, SharingPolicy.REGIONAL)
    make_tenant(platform, "label", Region.EU, SharingPolicy.GLOBAL)
    make_tenant(platform, "vault", Region.EU, SharingPolicy.SOLO)
    make_tenant(platform, "far", Region.US, SharingPolicy.GLOBAL)
    return platform


def test_encrypted_sum_equals_plaintext_average_and_only_global_tenants_leave(
    eu: Platform,
) -> None:
    script = Script()
    result = run_scripted(eu, Region.EU, script)
    entry = result.rounds[0]
    assert entry["status"] == "completed"
    assert set(entry["participants"]) == {"shop", "label"}  # the solo tenant never trains
    assert "vault" in entry["refused"] and "vault" not in script.trained
    keys = key_service(eu.settings)
    version = region_store(eu.settings, Region.EU).latest()
    assert version is not None and version.version == entry["backbone_out"]
    total = he.decrypt(
        keys.secret_context(region_domain(Region.EU)),
        he.EncryptedVector.from_bytes(version.payload()),
    )
    expected = sum(
        script.weights[t] * script.vectors[t].astype(np.float64) for t in ("shop", "label")
    )
    assert version.weight == pytest.approx(script.weights["shop"] + script.weights["label"])
    rel = (
        np.abs(total / version.weight - expected / version.weight).max()
        / np.abs(expected / version.weight).max()
    )
    assert rel < 1e-3
    # What crossed the region boundary: only the global tenant's share, under the global key.
    shares = global_tier.latest_shares(eu)
    assert [s.region for s in shares] == ["eu"]
    assert set(shares[0].manifest["metadata"]["contributors"]) == {"label"}
    share = he.decrypt(
        keys.secret_context("global"), he.EncryptedVector.from_bytes(shares[0].payload())
    )
    label_only = script.weights["label"] * script.vectors["label"].astype(np.float64)
    assert np.abs(share - label_only).max() < 1e-3 * np.abs(label_only).max()
    # The region's key cannot open the share, and the aggregator's context opens nothing.
    with pytest.raises(he.KeyMismatchError):
        he.decrypt(
            keys.secret_context(region_domain(Region.EU)),
            he.EncryptedVector.from_bytes(shares[0].payload()),
        )
    public = he.load_context(keys.public_context(region_domain(Region.EU)))
    with pytest.raises(he.KeyUnavailableError):
        he.decrypt(public, he.EncryptedVector.from_bytes(version.payload()))
    rounds = actions(eu, Region.EU, "federation.round")
    assert len(rounds) == 1 and sorted(rounds[0].details["participants"]) == ["label", "shop"]
    assert eu.plane(Region.EU).ledger.verify().ok


def test_export_refuses_a_non_global_contributor(eu: Platform) -> None:
    keys = key_service(eu.settings)
    keys.ensure("global")
    blob = he.encrypt(he.load_context(keys.public_context("global")), np.ones(8)).to_bytes()
    for tenant in ("shop", "vault", "far"):
        with pytest.raises(Exception, match="refused to export") as refused:
            global_tier.export_share(
                eu,
                Region.EU,
                run_id="r",
                round_=1,
                payload=blob,
                weight=1.0,
                contributors=[Contribution(tenant, "global", 1.0, 1, 1.0, "x")],
                actor="test",
            )
        assert type(refused.value).__name__ == "BoundaryViolation"
    assert global_tier.latest_shares(eu) == []
    refusals = actions(eu, Region.EU, "federation.export_refused")
    assert [r.tenant_id for r in refusals] == ["shop", "vault", "far"]


def test_mismatched_tags_and_false_claims_are_dropped_and_audited(eu: Platform) -> None:
    make_tenant(eu, "books", Region.EU, SharingPolicy.REGIONAL)
    script = Script(
        claims={"books": {"region": "us"}},  # a node claiming another region is refused
        tags={
            "label": {"tenant_id": "shop"},  # label's node sends an update tagged as shop
            "shop": {"sharing": "global"},  # shop's tags it global (its share would leave)
        },
    )
    result = run_scripted(eu, Region.EU, script)
    entry = result.rounds[0]
    assert entry["participants"] == {} and entry["status"] == "failed"
    assert {"label", "shop"} <= set(entry["dropped"]) and "books" in entry["refused"]
    dropped = {
        r.tenant_id: r.details["reason"]
        for r in actions(eu, Region.EU, "federation.update_dropped")
    }
    assert "tagged tenant='shop'" in dropped["label"] and "sharing='global'" in dropped["shop"]
    assert global_tier.latest_shares(eu) == []  # nothing left the region
    refused = {r.tenant_id for r in actions(eu, Region.EU, "federation.refused")}
    assert {"books", "vault"} <= refused


def test_a_crashing_client_does_not_stop_the_round_but_too_few_fail_it(eu: Platform) -> None:
    result = run_scripted(eu, Region.EU, Script(crash={"label"}), min_participants=1)
    entry = result.rounds[0]
    assert entry["status"] == "completed" and set(entry["participants"]) == {"shop"}
    assert "crashed mid-round" in entry["failed"]["label"]
    before = region_store(eu.settings, Region.EU).latest()
    # a second run needs two participants and gets one: it fails, the backbone stays
    failed = run_scripted(eu, Region.EU, Script(crash={"label"}), min_participants=2).rounds[0]
    assert failed["status"] == "failed" and failed["backbone_out"] == before.version  # type: ignore[union-attr]
    assert region_store(eu.settings, Region.EU).latest() == before


def test_a_client_past_the_timeout_is_left_out(eu: Platform) -> None:
    started = time.perf_counter()
    result = run_scripted(eu, Region.EU, Script(stall={"label": 8.0}), timeout=2.0)
    assert time.perf_counter() - started < 7
    entry = result.rounds[0]
    assert set(entry["participants"]) == {"shop"}
    assert entry["failed"]["label"] == "no reply before the round's timeout"


def test_budget_gate_excludes_a_tenant_before_the_round(eu: Platform) -> None:
    script = Script(claims={"label": {"spent": 9.5, "cap": 10.0, "round_cost": 1.0}})
    result = run_scripted(eu, Region.EU, script)
    entry = result.rounds[0]
    assert set(entry["participants"]) == {"shop"} and "label" not in script.trained
    excluded = actions(eu, Region.EU, "federation.excluded")
    assert [r.tenant_id for r in excluded] == ["label"]
    assert excluded[0].details["round_cost"] == 1.0


def test_aggregator_restart_resumes_after_the_last_completed_round(eu: Platform) -> None:
    class Crash(Exception):
        pass

    script = Script()
    original = global_tier.export_share
    calls = {"n": 0}

    def crash_in_round_two(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash("aggregator died")
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(global_tier, "export_share", crash_in_round_two)
        with pytest.raises(Crash):
            run_scripted(eu, Region.EU, script, rounds=3)
    assert [r.details["round"] for r in actions(eu, Region.EU, "federation.round")] == [1]
    latest = region_store(eu.settings, Region.EU).latest()  # the recorded round, not the lost one
    assert latest is not None and latest.metadata["round"] == 1
    resumed = run_scripted(eu, Region.EU, Script(), rounds=99)  # the unfinished run's plan wins
    assert resumed.resumed and resumed.rounds_planned == 3 and resumed.rounds_done == 3
    assert [e["round"] for e in resumed.rounds] == [1, 2, 3]
    assert resumed.rounds[1]["backbone_in"] == resumed.rounds[0]["backbone_out"]
    rounds = [r.details["round"] for r in actions(eu, Region.EU, "federation.round")]
    assert rounds == [1, 2, 3]


@dataclass(frozen=True)
class Node:
    tenant: str
    home: Region
    sharing: SharingPolicy
    claimed_region: Region


nodes_strategy = st.lists(
    st.builds(
        Node,
        tenant=st.sampled_from([f"t{k}" for k in range(8)]),
        home=st.sampled_from(list(Region)),
        sharing=st.sampled_from(list(SharingPolicy)),
        claimed_region=st.sampled_from(list(Region)),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda n: n.tenant,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(nodes=nodes_strategy)
def test_residency_guard_admits_exactly_the_permitted_tenants(
    tmp_path_factory: pytest.TempPathFactory, nodes: list[Node]
) -> None:
    """Whatever nodes claim, only non-solo tenants homed in the region train there."""
    home = tmp_path_factory.mktemp("guard")
    platform = Platform(Settings(home=home))
    try:
        for n in nodes:
            make_tenant(platform, n.tenant, n.home, n.sharing)
        script = Script(claims={n.tenant: {"region": n.claimed_region.value} for n in nodes})
        app = scripted_app(platform, Region.EU, script)
        grid = LocalGrid(app, {node_id(n.tenant): {"tenant-id": n.tenant} for n in nodes})
        config = FederationConfig(rounds=1, min_participants=1)
        result = run_federation(platform, Region.EU, grid, config, actor="test")
        allowed = {
            n.tenant
            for n in nodes
            if n.home == Region.EU
            and n.sharing != SharingPolicy.SOLO
            and n.claimed_region == Region.EU
        }
        assert set(script.trained) == allowed
        assert set(result.rounds[0]["participants"]) == allowed
        refused = {r.tenant_id for r in actions(platform, Region.EU, "federation.refused")}
        assert refused == {n.tenant for n in nodes} - allowed
    finally:
        platform.close()
