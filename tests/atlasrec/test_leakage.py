"""Leakage canaries and the scanner: planted only in their tenant's model, never served; a
canary in another tenant's model (by id or by content), in a served response, or an
unreadable model is found in one scan; a hit quarantines and stops the region's federation."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlasrec.clock import utcnow
from atlasrec.dataplane.tables import ServedRequest
from atlasrec.errors import InvalidInputError, RefusedError
from atlasrec.federation.store import BackboneStore
from atlasrec.ingest import ingest
from atlasrec.leakage import HIT, federation_stopped, resume, scan_region
from atlasrec.models.bundle import KIND, WEIGHTS, ModelBundle
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.online_store import OnlineStore, make_backend
from atlasrec.pipelines.monitor import monitor_status
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope, SharingPolicy
from privacy.canaries import canaries
from server.embedded import run_embedded
from server.federation import FederationConfig
from serving.runtime import RegionRuntime
from tests.utils.factories import (
    INTERACTIONS_HEADER,
    ITEMS_HEADER,
    MUSIC_ITEMS,
    music_interactions,
    seed_music_tenant,
    write_csv,
)

EU = Region.EU
FAST = TwoTowerConfig(dim=16, hidden=32, history=10, positives=4, negatives=16, epochs=1)


@pytest.fixture
def two(platform: Platform, tmp_path: Path) -> Platform:
    """Two trained tenants of one region (shop and label), nothing leaked."""
    for tenant in ("shop", "label"):
        seed_music_tenant(platform, tenant, EU, tmp_path, sharing=SharingPolicy.REGIONAL)
        train_tenant(platform, tenant, actor="t", no_dp=True, config=FAST)
    return platform


def _latest(platform: Platform, tenant: str) -> str | None:
    model = platform.plane(EU).artifacts.latest(Scope(tenant, EU), KIND, actor="t")
    return None if model is None else model.version


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_canaries_are_in_their_tenants_model_only_and_a_clean_scan_finds_nothing(
    two: Platform,
) -> None:
    shop = canaries(two.secret, "shop")
    scope = Scope("shop", EU)
    model = two.plane(EU).artifacts.latest(scope, KIND, actor="t")
    assert model is not None
    assert set(shop.items) <= set(ModelBundle.load(model).item_ids)
    online = OnlineStore(EU, make_backend(None), two.plane(EU).boundary)
    state = RegionRuntime(two, EU, online=online).tenant(two.control.get_tenant("shop")).state
    assert not set(shop.items) & set(state.position)  # never servable
    report = scan_region(two, EU, actor="t")
    assert report.hits == [] and report.unverified == [] and report.scanned >= 6
    assert not federation_stopped(two, EU)


def test_a_canary_in_another_tenants_model_is_found_quarantined_and_stops_federation(
    two: Platform, tmp_path: Path
) -> None:
    clean = _latest(two, "label")
    shop = canaries(two.secret, "shop")
    leaked = [*MUSIC_ITEMS, (shop.items[0], "Some record", "rock"), ("x1", shop.texts[1], "")]
    interactions = [*music_interactions(16), ("user-1", shop.items[0], 1_700_000_500, "view", 1.0)]
    ingest(
        two.plane(EU),
        Scope("label", EU),
        secret=two.secret,
        actor="t",
        items=write_csv(tmp_path / "leak-items.csv", ITEMS_HEADER, leaked),
        interactions=write_csv(tmp_path / "leak.csv", INTERACTIONS_HEADER, interactions),
    )
    tainted = train_tenant(two, "label", actor="t", no_dp=True, config=FAST).model_version
    report = scan_region(two, EU, actor="t")
    found = {(h.owner, h.tenant_id, h.canary) for h in report.hits}
    assert ("shop", "label", shop.items[0]) in found  # by id
    assert ("shop", "label", "content:" + shop.items[1]) in found  # by content
    assert all(h.found_in == f"model:label/{tainted}" for h in report.hits)
    assert _latest(two, "label") == clean  # quarantined: never served again
    assert federation_stopped(two, EU)
    with pytest.raises(RefusedError, match="leakage"):
        run_embedded(two, EU, FederationConfig(rounds=1), actor="t")
    flags = {t["tenant_id"]: t["flags"] for t in monitor_status(two, EU, actor="t")["tenants"]}
    assert "leakage" in flags["label"] and "leakage" not in flags["shop"]
    assert len(two.plane(EU).ledger.records(action=HIT, limit=None)) == len(report.hits)
    assert scan_region(two, EU, actor="t").hits == []  # the quarantined model is not rescanned
    with pytest.raises(InvalidInputError, match="reason"):
        resume(two, EU, reason=" ", actor="officer")
    resume(two, EU, reason="label's catalog fixed", actor="officer")
    assert not federation_stopped(two, EU)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_served_canary_and_an_unreadable_model_are_never_clean(two: Platform) -> None:
    shop = canaries(two.secret, "shop")
    scope = Scope("shop", EU)
    with two.plane(EU).session(scope, actor="t", action="t") as session:
        session.add(
            ServedRequest(
                request_id="r" * 32,
                tenant_id="shop",
                served_at=utcnow(),
                k=1,
                items=[shop.items[2]],
                cold_start=False,
                degraded=[],
                timings_ms={},
            )
        )
    model = two.plane(EU).artifacts.latest(Scope("label", EU), KIND, actor="t")
    assert model is not None
    (model.path / WEIGHTS).write_bytes(b"not a model")
    report = scan_region(two, EU, actor="t").as_json()
    assert not report["clean"]
    assert [u["target"] for u in report["unverified"]] == [f"model:label/{model.version}"]
    assert federation_stopped(two, EU)
    resume(two, EU, reason="the served canary is explained", actor="officer")
    again = scan_region(two, EU, actor="t")  # found again, but not new: no second stop
    assert any(h.found_in.startswith("served:") for h in again.hits)
    assert not federation_stopped(two, EU)
    assert len(two.plane(EU).ledger.records(action=HIT, limit=None)) == 1
    served = [h for h in report["hits"] if h["found_in"].startswith("served:")]
    assert served == [
        {
            "owner": "shop",
            "found_in": f"served:shop/{'r' * 32}",
            "tenant_id": "shop",
            "canary": shop.items[2],
        }
    ]


def test_a_quarantined_backbone_is_never_the_latest(tmp_path: Path) -> None:
    store = BackboneStore(tmp_path, "eu")
    first = store.publish(b"one", metadata={})
    second = store.publish(b"two", metadata={})
    store.quarantine(second.version, "leakage: a canary", actor="t")
    latest = store.latest()
    assert latest is not None and latest.version == first.version
    store.quarantine(first.version, "leakage: a canary", actor="t")
    assert store.latest() is None and store.unquarantined() == []
