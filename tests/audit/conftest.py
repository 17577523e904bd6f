"""Fixtures of the audit tests: a seeded region and clients of its regional apps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from serving.app import create_app
from tests.utils.audit import AuditWorld, seed_audit_world

ClientFactory = Callable[[Region], TestClient]


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> AuditWorld:
    return seed_audit_world(platform, tmp_path)


@pytest.fixture
def app_client(world: AuditWorld) -> Iterator[ClientFactory]:
    """Clients of the regional apps (started on first use, stopped at the end)."""
    opened: list[TestClient] = []

    def factory(region: Region = Region.EU) -> TestClient:
        app = create_app(region, platform=world.platform, preload=False, refresh=False)
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.__exit__(None, None, None)
