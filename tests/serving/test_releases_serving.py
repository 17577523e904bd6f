"""Serving follows the release registry: a candidate is never served; promote and rollback are."""

from __future__ import annotations

from conftest import FAST, ServedRegion, bearer, client_for

from atlasrec.pipelines.train import train_tenant
from atlasrec.releases import promote, rollback


def served_version(client, key: str) -> str:  # type: ignore[no-untyped-def]
    response = client.post("/v1/recommendations", json={"user_id": "user-1"}, headers=bearer(key))
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
