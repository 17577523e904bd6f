"""The sign-in throttle: shared by every worker, and no way to lock an officer out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from atlasrec.control.officers import OfficerRole, Officers
from atlasrec.control.signin_throttle import SignInThrottle, client_of
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from audit.ui.deps import STATE_KEY
from audit.ui.sessions import DEVICE_COOKIE
from serving.app import create_app
from tests.utils.audit import sign_in

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
Browser = Callable[..., TestClient]
OFFICERS = ("po-a", "po-b")


@pytest.fixture
def passwords(platform: Platform) -> dict[str, str]:
    officers = Officers(platform.control.engine)
    made = (officers.create(o, role=OfficerRole.PLATFORM, regions=[Region.EU]) for o in OFFICERS)
    return {each.officer.id: each.password for each in made}


@pytest.fixture
def apps(platform: Platform) -> Iterator[list[FastAPI]]:
    """Two workers of region eu: separate platforms (engines, pools) on the same databases."""
    second = Platform(platform.settings)
    started = []
    for each in (platform, second):
        app = create_app(Region.EU, platform=each, preload=False, refresh=False)
        client = TestClient(app)
        client.__enter__()
        started.append((app, client))
    yield [app for app, _ in started]
    for _, client in started:
        client.__exit__(None, None, None)
    second.close()


@pytest.fixture
def browser(apps: list[FastAPI]) -> Browser:
    """A browser at `address` talking to worker `worker`."""

    def make(address: str, worker: int = 0, **throttle: Any) -> TestClient:
        app = apps[worker]
        if throttle:
            context = getattr(app.state, STATE_KEY)
            context.throttle = SignInThrottle(context.platform.control.engine, **throttle)
        return TestClient(app, client=(address, 50000), follow_redirects=False)

    return make


def test_failures_are_counted_across_workers(browser: Browser, passwords: dict[str, str]) -> None:
    for n in range(5):
        guess = sign_in(browser("198.51.100.7", worker=n % 2), "po-a", "wrong")
        assert guess.status_code == 401
    for worker in (0, 1):
        refused = sign_in(browser("198.51.100.7", worker=worker), "po-a", passwords["po-a"])
        assert refused.status_code == 429, refused.text
        assert 295 <= int(refused.headers["retry-after"]) <= 300
    assert sign_in(browser("198.51.100.8", worker=1), "po-a", passwords["po-a"]).status_code == 303


@sqlite_only
def test_a_distributed_guess_cannot_lock_out_a_known_browser(
    browser: Browser, passwords: dict[str, str]
) -> None:
    officer = browser("192.0.2.10", account_limit=8)
    assert sign_in(officer, "po-a", passwords["po-a"]).status_code == 303
    assert officer.cookies.get(DEVICE_COOKIE)
    for n in range(8):
        assert sign_in(browser(f"203.0.113.{n}"), "po-a", "wrong").status_code == 401
    assert sign_in(browser("203.0.113.200"), "po-a", passwords["po-a"]).status_code == 429
    assert sign_in(officer, "po-a", passwords["po-a"]).status_code == 303
    assert sign_in(browser("203.0.113.200"), "po-b", passwords["po-b"]).status_code == 303


@sqlite_only
def test_one_client_guessing_does_not_stop_the_officer_elsewhere(
    browser: Browser, passwords: dict[str, str]
) -> None:
    attacker = browser("203.0.113.5")
    for _ in range(5):
        assert sign_in(attacker, "po-a", "wrong").status_code == 401
    assert sign_in(attacker, "po-a", passwords["po-a"]).status_code == 429
    assert sign_in(browser("192.0.2.10"), "po-a", passwords["po-a"]).status_code == 303


@sqlite_only
def test_spraying_from_one_client_is_stopped_across_accounts(
    browser: Browser, passwords: dict[str, str]
) -> None:
    sprayer = browser("203.0.113.5", client_limit=6)
    for n in range(6):
        assert sign_in(sprayer, f"guess{n}", "wrong").status_code == 401
    assert sign_in(sprayer, "po-b", passwords["po-b"]).status_code == 429
    assert sign_in(browser("192.0.2.10"), "po-b", passwords["po-b"]).status_code == 303


@sqlite_only
def test_a_known_browser_is_throttled_on_its_own(
    browser: Browser, passwords: dict[str, str]
) -> None:
    officer = browser("192.0.2.10")
    assert sign_in(officer, "po-a", passwords["po-a"]).status_code == 303
    for _ in range(5):
        assert sign_in(officer, "po-a", "wrong").status_code == 401
    assert sign_in(officer, "po-a", passwords["po-a"]).status_code == 429
    officer.cookies.delete(DEVICE_COOKIE, path="/audit/login")
    assert sign_in(officer, "po-a", passwords["po-a"]).status_code == 303


@sqlite_only
def test_a_device_cookie_is_its_officers_only(browser: Browser, passwords: dict[str, str]) -> None:
    stolen = browser("203.0.113.5")
    assert sign_in(stolen, "po-b", passwords["po-b"]).status_code == 303
    for _ in range(5):
        assert sign_in(stolen, "po-a", "wrong").status_code == 401
    assert sign_in(browser("203.0.113.5"), "po-a", passwords["po-a"]).status_code == 429


@sqlite_only
def test_failures_leave_the_window(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr("atlasrec.control.signin_throttle.time.time", lambda: clock[0])
    throttle = SignInThrottle(platform.control.engine, window_s=100, pair_limit=2)
    limits = throttle.limits("a", "203.0.113.5", None)
    for step in (0, 30, 10):
        clock[0] += step
        throttle.failed(limits)
    assert throttle.retry_after(limits) == pytest.approx(100 - 10)  # the 2nd failure must go
    clock[0] += 90
    assert throttle.retry_after(limits) == 0
    throttle.failed(limits)
    throttle.succeeded(limits)
    assert throttle.retry_after(limits) == 0
    assert throttle.count(limits[1]) == 2  # the client's count stays after a success


def test_clients_are_counted_by_address_and_ipv6_network() -> None:
    assert client_of("203.0.113.5") == "203.0.113.5"
    assert client_of("2001:db8:1:2:3:4:5:6") == client_of("2001:db8:1:2:ffff::1")
    assert client_of("2001:db8:1:2::1") != client_of("2001:db8:1:3::1")
    assert client_of(None) == "unknown"
