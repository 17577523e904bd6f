"""Fixtures of the audit tests: a seeded region and clients of its regional apps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, sync_playwright

from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region
from serving.app import create_app
from tests.utils.audit import AuditWorld, seed_audit_world
from tests.utils.browser import CHROMIUM, launch, local_page, serving

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


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AuditWorld]]:
    """The seeded EU app behind a real uvicorn server (SQLite), for browser tests."""
    folder = tmp_path_factory.mktemp("audit-browser")
    platform = Platform(Settings(home=folder / "home"))
    world = seed_audit_world(platform, folder)
    app = create_app(Region.EU, platform=platform, preload=False, refresh=False)
    with serving(app) as base:
        yield base, world
    platform.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium (a missing browser fails: scripts/services installs it)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/services installs Debian's chromium")
    with sync_playwright() as playwright:
        yield launch(playwright)


@pytest.fixture
def page(browser: Browser, live: tuple[str, AuditWorld]) -> Iterator[Page]:
    """A fresh browser context (no cookies) that can reach only the live server."""
    with local_page(browser, [live[0]]) as opened:
        yield opened
