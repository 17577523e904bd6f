"""The region's PostgreSQL lost mid-traffic: serving goes on and every write is kept.

The app talks to the real PostgreSQL through a TCP proxy the test cuts, as a crashed or
unreachable server would look to it (open connections dropped, new ones refused). While
cut: recommendations are served from the in-process snapshot (a known key's last answer
stands in for the control plane), events are acknowledged by the region's log, a catalog
upsert is kept in the log (202, `pending`), and a key never seen gets 503, never 500 or 401.
Once the link is back, the deferred upsert and the served records reach the database.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import FAST, bearer, client_for
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from utils.factories import seed_music_tenant
from utils.proxy import Proxy

from atlasrec.dataplane.tables import Item, ServedRequest
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region

pytestmark = pytest.mark.postgres


@pytest.fixture
def outage(pg_settings: Settings, tmp_path: Path) -> Iterator[tuple[Platform, Proxy, str]]:
    """A region on PostgreSQL behind a proxy (control plane too), one trained tenant, its key."""
    target = urlsplit(pg_settings.control_url())
    proxy = Proxy((target.hostname or "127.0.0.1", target.port or 5432))
    settings = pg_settings.model_copy(
        update={
            "control_db_url": proxy.via(pg_settings.control_url()),
            "region_db_urls": {r: proxy.via(u) for r, u in pg_settings.region_db_urls.items()},
            "serving_auth_cache_s": 0.05,
            "serving_reload_s": 0.2,
        }
    )
    platform = Platform(settings)
    seed_music_tenant(platform, "shop", Region.EU, tmp_path)
    train_tenant(platform, "shop", actor="test", no_dp=True, config=FAST)
    key = platform.control.issue_api_key("shop").api_key
    yield platform, proxy, key
    proxy.restore()
    platform.close()
    proxy.close()


def recommend(client: TestClient, key: str) -> tuple[int, dict[str, object]]:
    answer = client.post(
        "/v1/recommendations", json={"user_id": "user-0", "k": 30}, headers=bearer(key)
    )
    return answer.status_code, answer.json()


def served_items(client: TestClient, key: str) -> set[str]:
    status, body = recommend(client, key)
    assert status == 200, body
    return {str(i["item_id"]) for i in body["items"]}  # type: ignore[attr-defined,index]


def wait_for(check: object, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_a_database_outage_serves_from_the_snapshot_and_keeps_every_write(
    outage: tuple[Platform, Proxy, str],
) -> None:
    platform, proxy, key = outage
    item = {"item_id": "while-down", "title": "Item 98 jazz record", "category": "jazz"}
    with client_for(platform) as client:
        assert served_items(client, key)  # the key is known, the tenant loaded
        proxy.cut()
        time.sleep(0.1)  # the key's answer is past its TTL: the control plane is asked
        status, body = recommend(client, key)
        assert status == 200, body
        event = {"user_id": "user-1", "item_id": "i1", "event_id": uuid.uuid4().hex}
        posted = client.post("/v1/events", json={"events": [event]}, headers=bearer(key))
        assert posted.status_code == 202, posted.text
        put = client.put("/v1/catalog/items", json={"items": [item]}, headers=bearer(key))
        assert put.status_code == 202 and put.json()["pending"] is True, put.text
        assert "while-down" not in served_items(client, key)
        stranger = client.post(
            "/v1/recommendations", json={"k": 5}, headers=bearer("ark_00ff00ff00ff00ff_secret")
        )
        assert stranger.status_code == 503, stranger.text
        assert "control plane cannot be reached" in stranger.json()["detail"]
        proxy.restore()
        assert wait_for(lambda: "while-down" in served_items(client, key))
    plane = platform.plane(Region.EU)
    with Session(plane.engine) as session:
        stored = session.get(ServedRequest, str(body["request_id"]))
        written = session.exec(select(Item).where(Item.item_id == "while-down")).one()
    assert stored is not None and stored.tenant_id == "shop"
    assert written.written_at is not None and written.written_at < written.updated_at
    applied = [json.loads(r.details) for r in plane.ledger.records(action="catalog.upserted")]
    assert [r["request_id"] for r in applied if r.get("deferred")] == [put.json()["request_id"]]
