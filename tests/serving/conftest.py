"""Fixtures of the serving tests: a region with trained tenants and a client per app."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from utils.factories import INTERACTIONS_HEADER, ITEMS_HEADER, seed_music_tenant, write_csv

from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.online_store import OnlineBackend
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from serving.app import create_app

FAST = TwoTowerConfig(
    dim=16, hidden=32, history=10, positives=4, negatives=16, epochs=3, batch_size=8
)
BOOKS = [
    (f"b{k}", f"Book {k} {('poetry', 'crime')[k % 2]} novel", ("poetry", "crime")[k % 2])
    for k in range(20)
]


@dataclass
class ServedRegion:
    """A region with two trained tenants (shop, label) and a tenant homed elsewhere (far)."""

    platform: Platform
    keys: dict[str, str]
    versions: dict[str, str]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def region(platform: Platform, tmp_path: Path) -> ServedRegion:
    seed_music_tenant(platform, "shop", Region.EU, tmp_path)
    _, label_key = platform.create_tenant(
        "label", region=Region.EU, sharing=SharingPolicy.REGIONAL, actor="test"
    )
    from atlasrec.ingest import ingest
    from atlasrec.tenancy import Scope

    ingest(
        platform.plane(Region.EU),
        Scope("label", Region.EU),
        secret=platform.secret,
        actor="test",
        items=write_csv(tmp_path / "label-items.csv", ITEMS_HEADER, BOOKS),
        interactions=write_csv(
            tmp_path / "label-inter.csv",
            INTERACTIONS_HEADER,
            [
                (f"user-{u}", f"b{(u + n) % 20}", 1_700_000_000 + n, "view", 1.0)
                for u in range(8)
                for n in range(4)
            ],
        ),
    )
    _, far_key = platform.create_tenant(
        "far", region=Region.US, sharing=SharingPolicy.SOLO, actor="test"
    )
    versions = {
        t: train_tenant(platform, t, actor="test", no_dp=True, config=FAST).model_version
        for t in ("shop", "label")
    }
    keys = {
        "shop": platform.control.issue_api_key("shop").api_key,
        "label": label_key.api_key,
        "far": far_key.api_key,
    }
    return ServedRegion(platform, keys, versions)


def client_for(
    platform: Platform, backend: OnlineBackend | None = None, **options: object
) -> TestClient:
    """A client of the EU app (the context manager runs its start-up and shutdown)."""
    app = create_app(Region.EU, platform=platform, backend=backend, **options)  # type: ignore[arg-type]
    return TestClient(app)


def operator(client: TestClient) -> TestClient:
    """A client of the same app on this host (let into /metrics and /healthz/detail)."""
    return TestClient(client.app, client=("127.0.0.1", 50000))


@pytest.fixture
def client(region: ServedRegion) -> Iterator[TestClient]:
    with client_for(region.platform, refresh=False) as c:
        yield c
