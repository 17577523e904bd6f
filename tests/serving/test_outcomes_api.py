"""Outcomes tied to what was served: tenant-bound request ids, typed events, online metrics."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.dataset as ds
import pytest
from conftest import ServedRegion, bearer, client_for
from fastapi.testclient import TestClient

from atlasrec.boundary import REFUSED
from atlasrec.event_types import BUILT_IN
from atlasrec.outcomes import refresh_outcomes, stored_outcomes
from atlasrec.pipelines.tenants import set_event_types
from atlasrec.tenancy import Region, Scope

SHOP = Scope("shop", Region.EU)


def recommend(client: TestClient, key: str, user: str = "user-1") -> dict[str, Any]:
    response = client.post(
        "/v1/recommendations", json={"user_id": user, "k": 5}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == response.json()["request_id"]
    body: dict[str, Any] = response.json()
    return body


def post(client: TestClient, key: str, events: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    return client.post("/v1/events", json={"events": events}, headers=bearer(key))


def caught_up(client: TestClient) -> bool:
    workers = client.app.state.serving.consumers  # type: ignore[attr-defined]
    return bool(workers) and all(w.caught_up(10.0) for w in workers)


def test_events_naming_a_served_request_are_attributed_and_counted_per_model_version(
    region: ServedRegion, client: TestClient
) -> None:
    key = region.keys["shop"]
    served = [recommend(client, key, user) for user in ("user-1", "user-2")]
    first, second = served
    items = [i["item_id"] for i in first["items"]]
    outcome = {"user_id": "user-1", "request_id": first["request_id"]}
    response = post(
        client,
        key,
        [
            {**outcome, "item_id": items[0], "position": 0, "event": "click"},
            {**outcome, "item_id": items[0], "position": 0, "event": "click"},  # same position
            {**outcome, "item_id": items[2], "event": "purchase"},  # its position is found
            {**outcome, "item_id": items[3], "position": 1, "event": "click"},  # not there
            {
                "user_id": "user-2",
                "request_id": second["request_id"],
                "item_id": second["items"][0]["item_id"],
                "event": "view",  # attributed, neither a click nor a conversion
            },
        ],
    )
    assert response.status_code == 202, response.text
    assert caught_up(client)
    offline = region.platform.plane(Region.EU).offline.scoped(SHOP)
    logged = offline.read_table(
        ["request_id", "position", "event"], where=ds.field("request_id").is_valid()
    ).to_pylist()
    assert {"request_id": first["request_id"], "position": 0, "event": "click"} in logged
    assert len(logged) == 5

    rows = refresh_outcomes(region.platform, "shop", actor="test", k=10)
    assert [(r.model_version, r.requests) for r in rows] == [(region.versions["shop"], 2)]
    row = rows[0]
    shown = len(first["items"]) + len(second["items"])
    assert row.impressions == shown
    assert row.clicks == 2 and row.conversions == 1 and row.unattributed == 1
    assert row.ctr_at_k == pytest.approx(2 / shown)
    assert row.conversions_per_request == pytest.approx(0.5)
    assert stored_outcomes(region.platform, "shop", actor="test")[0]["clicks"] == 2
    assert stored_outcomes(region.platform, "label", actor="test") == []


def test_an_event_naming_another_tenants_request_is_refused_audited_and_never_logged(
    region: ServedRegion, client: TestClient
) -> None:
    plane = region.platform.plane(Region.EU)
    theirs = recommend(client, region.keys["label"], "user-1")["request_id"]
    made_up = "0" * 32
    for request_id in (theirs, made_up):
        event = {"user_id": "u", "item_id": "i1", "request_id": request_id, "event": "click"}
        refused = post(client, region.keys["shop"], [{"user_id": "u", "item_id": "i0"}, event])
        assert refused.status_code == 403, refused.text
        assert "'shop'" in refused.json()["detail"]
        assert "events[1].request_id" in refused.json()["detail"]
    assert plane.events.count(SHOP) == 0  # the whole batch refused: nothing half-written
    records = [r for r in plane.ledger.records(action=REFUSED) if r.tenant_id == "shop"]
    details = [json.loads(r.details) for r in records]
    assert [d["request_id"] for d in details] == [theirs, made_up]
    assert {d["attempted"] for d in details} == {"events.attribute"}


def test_event_types_are_checked_and_an_untyped_weight_is_the_types(
    region: ServedRegion,
) -> None:
    set_event_types(region.platform, "shop", {"wishlist": 0.3}, actor="test")
    with client_for(region.platform, refresh=False) as client:
        key = region.keys["shop"]
        unknown = post(client, key, [{"user_id": "u", "item_id": "i1", "event": "rating"}])
        assert unknown.status_code == 422
        assert "'shop'" in unknown.json()["detail"]
        assert "events[0].event" in unknown.json()["detail"]
        orphan = post(client, key, [{"user_id": "u", "item_id": "i1", "position": 2}])
        assert orphan.status_code == 422 and "events[0].position" in orphan.json()["detail"]
        label = post(
            client, region.keys["label"], [{"user_id": "u", "item_id": "b1", "event": "wishlist"}]
        )
        assert label.status_code == 422  # another tenant's own type is not the label's
        online = client.app.state.serving.runtime.online.scoped(SHOP, actor="test")  # type: ignore[attr-defined]
        before = online.item_counts(["i1", "i2"])
        typed = [
            {"user_id": "u", "item_id": "i1", "event": "wishlist"},
            {"user_id": "u", "item_id": "i2", "event": "purchase"},
        ]
        assert post(client, key, typed).status_code == 202
        after = online.item_counts(["i1", "i2"])
    assert after["i1"] - before["i1"] == pytest.approx(0.3)
    assert after["i2"] - before["i2"] == pytest.approx(BUILT_IN["purchase"])
