"""Non-personal fallback serving of a global tenant in the region it chose.

A global tenant homed in `eu` names `us` as its fallback region: `us` then holds a copy of
its catalog (content only; popularity only as a DP release) and answers its recommendation
requests without using the user id, while events, catalog writes and every other tenant
(solo, regional, or a global one that chose no fallback) still get 421 there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FAST, bearer
from fastapi.testclient import TestClient
from utils.factories import ITEMS_HEADER, MUSIC_ITEMS, seed_music_tenant, write_csv

from atlasrec.boundary import REFUSED
from atlasrec.errors import BoundaryViolation, InvalidInputError
from atlasrec.fallback import (
    EXPORTED,
    RECEIVED,
    copies_root,
    copy_version,
    latest_copy,
    set_fallback,
)
from atlasrec.federation.store import global_store
from atlasrec.ingest import ingest
from atlasrec.leakage import scan_region
from atlasrec.models.backbone import flatten, initial_backbone
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope, SharingPolicy
from privacy.canaries import canaries
from serving.app import create_app


@pytest.fixture
def homed(platform: Platform, tmp_path: Path) -> dict[str, str]:
    """`glob` (global) and `alone` (solo), homed in eu, trained without DP; their keys."""
    keys = {}
    for tenant, sharing in (("glob", SharingPolicy.GLOBAL), ("alone", SharingPolicy.SOLO)):
        seed_music_tenant(platform, tenant, Region.EU, tmp_path, sharing=sharing)
        train_tenant(platform, tenant, actor="test", no_dp=True, config=FAST)
        keys[tenant] = platform.control.issue_api_key(tenant).api_key
    return keys


def us_client(platform: Platform) -> TestClient:
    return TestClient(create_app(Region.US, platform=platform, refresh=False))


def test_only_a_global_tenant_may_name_another_region(
    platform: Platform, homed: dict[str, str]
) -> None:
    with pytest.raises(InvalidInputError, match=r"'alone' shares 'solo'.*fail-closed"):
        set_fallback(platform, "alone", Region.US, actor="test")
    with pytest.raises(InvalidInputError, match="must differ from its home region"):
        set_fallback(platform, "glob", Region.EU, actor="test")
    assert platform.control.get_tenant("alone").fallback_region is None


def test_the_fallback_region_serves_non_personal_answers_from_the_catalog_copy(
    platform: Platform, homed: dict[str, str]
) -> None:
    done = set_fallback(platform, "glob", Region.US, actor="test")
    assert done["copy"]["items"] == 30 and done["copy"]["popularity"] is None  # not DP
    copy = latest_copy(platform, Region.US, "glob")
    assert copy is not None and copy.popularity is None
    assert {"item_id", "category", "attributes"} == set(copy.items[0])  # content only
    with us_client(platform) as client:
        body = {"user_id": "user-3", "k": 5, "context": {"recent_items": ["i1"]}}
        answers = [
            client.post(
                "/v1/recommendations", json={**body, "user_id": user}, headers=bearer(homed["glob"])
            )
            for user in ("user-3", "user-4")
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            data = answer.json()
            assert data["fallback"] is True and data["region"] == "us"
            assert data["model_version"] == f"fallback-{copy.version}"
            assert len(data["items"]) == 5 and "i1" not in {i["item_id"] for i in data["items"]}
        # non-personal: two users with the same session get the same answer
        assert [i["item_id"] for i in answers[0].json()["items"]] == [
            i["item_id"] for i in answers[1].json()["items"]
        ]
        events = {"events": [{"user_id": "user-3", "item_id": "i1"}]}
        refused = client.post("/v1/events", json=events, headers=bearer(homed["glob"]))
        assert refused.status_code == 421, refused.text
        solo = client.post("/v1/recommendations", json=body, headers=bearer(homed["alone"]))
        assert solo.status_code == 421, solo.text
    us = platform.plane(Region.US)
    served = [json.loads(r.details) for r in us.ledger.records(action="serving.fallback")]
    assert sum(r["answers"] for r in served) == 2
    assert us.ledger.records(action=RECEIVED) and platform.plane(Region.EU).ledger.records(
        action=EXPORTED
    )
    assert not list(copies_root(platform, Region.US).rglob("*user*"))


def test_the_global_backbone_scores_fallback_answers_until_it_is_quarantined(
    platform: Platform, homed: dict[str, str]
) -> None:
    set_fallback(platform, "glob", Region.US, actor="test")
    copy = latest_copy(platform, Region.US, "glob")
    assert copy is not None
    weights = initial_backbone(5)
    store = global_store(platform.settings)
    backbone = store.publish(
        flatten(weights).tobytes(), metadata={"weight": 1.0, "encrypted": False}
    )
    body = {"k": 5, "context": {"recent_items": ["i1", "i2"]}}
    app = create_app(Region.US, platform=platform, refresh=False)
    with TestClient(app) as client:
        scored = client.post("/v1/recommendations", json=body, headers=bearer(homed["glob"]))
        assert scored.status_code == 200, scored.text
        label = f"fallback-{copy.version}+global-{backbone.version}"
        assert scored.json()["model_version"] == label
        model = app.state.serving.runtime.fallback(platform.control.get_tenant("glob")).state.model
        assert model is not None and not model.config.residuals
        assert all(torch.equal(model.backbone.state_dict()[k], w) for k, w in weights.items())

        store.quarantine(backbone.version, "test", actor="test")  # never scores again
        alone = client.post("/v1/recommendations", json=body, headers=bearer(homed["glob"]))
        assert alone.status_code == 200, alone.text
        assert alone.json()["model_version"] == f"fallback-{copy.version}"
    served = platform.plane(Region.US).ledger.records(action="serving.fallback")
    assert {json.loads(r.details)["model"] for r in served} == {label, f"fallback-{copy.version}"}


def test_switching_the_fallback_off_closes_it_and_other_regions_never_open_it(
    platform: Platform, homed: dict[str, str]
) -> None:
    set_fallback(platform, "glob", Region.US, actor="test")
    with pytest.raises(BoundaryViolation):
        latest_copy(platform, Region.SG, "glob")  # not its fallback region: refused, audited
    assert platform.plane(Region.SG).ledger.records(action=REFUSED)
    set_fallback(platform, "glob", None, actor="test")
    with us_client(platform) as client:
        answer = client.post("/v1/recommendations", json={"k": 5}, headers=bearer(homed["glob"]))
        assert answer.status_code == 421, answer.text


def test_a_canary_in_a_fallback_copy_is_found_and_the_copy_is_never_served(
    platform: Platform, homed: dict[str, str], tmp_path: Path
) -> None:
    alone = canaries(platform.secret, "alone")
    leaked = [*MUSIC_ITEMS, (alone.items[0], "Some record", "rock"), ("x1", alone.texts[1], "")]
    ingest(
        platform.plane(Region.EU),
        Scope("glob", Region.EU),
        secret=platform.secret,
        actor="test",
        items=write_csv(tmp_path / "leak-items.csv", ITEMS_HEADER, leaked),
    )
    version = set_fallback(platform, "glob", Region.US, actor="test")["copy"]["version"]
    report = scan_region(platform, Region.US, actor="test")
    found = {(h.owner, h.found_in, h.canary) for h in report.hits}
    where = f"fallback:glob/{version}"
    assert ("alone", where, alone.items[0]) in found  # by id
    assert ("alone", where, f"content:{alone.items[1]}") in found  # by content
    assert copy_version(platform, Region.US, "glob") is None  # quarantined: never served
    with us_client(platform) as client:
        answer = client.post("/v1/recommendations", json={"k": 5}, headers=bearer(homed["glob"]))
        assert answer.status_code == 503, answer.text
    assert scan_region(platform, Region.US, actor="test").hits == []  # not rescanned
