"""The audit UI in a real browser: headless Chromium (Debian's) driven by Playwright.

A real uvicorn server runs the EU app in a thread; the browser may reach nothing else (every
other request is aborted and reported). Screenshots go to `test-artifacts/audit-ui/`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Playwright, Route, sync_playwright

from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region
from serving.app import create_app
from tests.utils.audit import AuditWorld, seed_audit_world

CHROMIUM = Path(os.environ.get("ATLASREC_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(
    os.environ.get(
        "ATLASREC_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
    )
)
OFFLINE_FLAGS = [
    "--no-sandbox",  # root in a container: no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--metrics-recording-only",
    "--proxy-server=direct://",
    "--proxy-bypass-list=*",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AuditWorld]]:
    """The seeded EU app behind a real uvicorn server (SQLite)."""
    folder = tmp_path_factory.mktemp("audit-browser")
    platform = Platform(Settings(home=folder / "home"))
    world = seed_audit_world(platform, folder)
    port = _free_port()
    app = create_app(Region.EU, platform=platform, preload=False, refresh=False)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", world
    server.should_exit = True
    thread.join(timeout=30)
    platform.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/services installs Debian's chromium")
    with sync_playwright() as playwright:
        yield _launch(playwright)


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=OFFLINE_FLAGS
    )


@pytest.fixture
def page(browser: Browser, live: tuple[str, AuditWorld]) -> Iterator[Page]:
    """A fresh browser context (no cookies) that can reach only the live server."""
    base, _ = live
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def only_local(route: Route) -> None:
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert outside == [], f"the UI tried to reach the network: {outside}"


def shot(page: Page, name: str) -> Path:
    path = ARTIFACTS / "audit-ui" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, base: str, world: AuditWorld, officer: str) -> None:
    page.goto(f"{base}/audit/tenants")
    assert page.url.startswith(f"{base}/audit/login")
    page.fill("#officer_id", officer)
    page.fill("#password", world.passwords[officer])
    page.click("section.login button[type=submit]")
    page.wait_for_url(f"{base}/audit/tenants")


def test_platform_officer_sees_the_budget_chart(page: Page, live: tuple[str, AuditWorld]) -> None:
    base, world = live
    sign_in(page, base, world, "po-eu")
    rows = page.locator("table.tenants tbody tr")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.tenant)")) == ["label", "shop"]
    shot(page, "01-tenants-platform-officer")

    page.click("a[href='/audit/tenants/shop']")
    chart = page.locator("svg.budget-chart")
    chart.wait_for()
    bars = chart.locator("rect.bar")
    assert bars.count() == len(world.runs["shop"]) == 4
    kinds = bars.evaluate_all("bs => bs.map(b => b.dataset.kind)")
    assert kinds == ["train", "federation", "federation", "train"]
    for bar in bars.all():  # rendered: laid out with a real size, filled by the stylesheet
        box = bar.bounding_box()
        assert box is not None and box["width"] > 5 and box["height"] >= 1
    assert bars.first.evaluate("b => getComputedStyle(b).fill") == "rgb(62, 111, 216)"
    assert chart.locator("polyline.cap-line").count() == 1
    assert chart.locator("polyline.spent-line").count() == 1
    assert page.locator("#cap").inner_text() == "10"
    shot(page, "02-shop-budget-chart")

    page.click("text=Residency report")
    assert page.locator("table.artifacts tbody tr").count() == 1
    assert "in home region" in page.locator("table.artifacts").inner_text()
    assert "label@eu" in page.locator("table.refusals").inner_text()
    shot(page, "03-shop-residency")


def test_tenant_officer_is_refused_another_tenants_pages(
    page: Page, live: tuple[str, AuditWorld]
) -> None:
    base, world = live
    sign_in(page, base, world, "to-shop")
    rows = page.locator("table.tenants tbody tr")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.tenant)") == ["shop"]
    for path in ("/audit/tenants/label", "/audit/tenants/label/report.json"):
        response = page.goto(f"{base}{path}")
        assert response is not None and response.status == 403
        assert page.locator("h1").inner_text() == "Refused"
        assert "may not see tenant 'label'" in page.locator(".reason").inner_text()
    shot(page, "04-tenant-officer-refused")
    ledger = world.platform.plane(Region.EU).ledger
    refused = ledger.records(tenant_id="label", action="officer.refused", limit=None)
    assert any(r.actor == "officer:to-shop" for r in refused)


def test_follow_a_request_and_export(page: Page, live: tuple[str, AuditWorld]) -> None:
    base, world = live
    sign_in(page, base, world, "po-eu")
    page.click("text=Lineage")
    page.fill("#request-id", world.requests["shop"])
    page.click("form.filters button[type=submit]")
    steps = page.locator("#lineage")
    steps.wait_for()
    assert world.model_version in steps.inner_text()
    assert page.locator("#snapshot-verified").is_visible()
    assert "bb-v1" in page.locator("li.backbone").inner_text()
    shot(page, "05-lineage")

    page.goto(f"{base}/audit/tenants/shop")
    with page.expect_download() as download:
        page.click("a[href='/audit/tenants/shop/report.csv']")
    saved = ARTIFACTS / "audit-ui" / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.read_text().startswith("record_type,tenant_id,region")
    page.goto(f"{base}/audit/tenants/shop/report")
    assert page.locator("svg.budget-chart rect.bar").count() == 4
    shot(page, "06-printable-report")


def test_lowering_the_cap_stops_the_tenant(page: Page, live: tuple[str, AuditWorld]) -> None:
    base, world = live
    sign_in(page, base, world, "po-eu")
    page.goto(f"{base}/audit/tenants/label")
    page.fill("#cap-input", "0.5")
    page.fill("#reason-input", "suspected re-identification risk; freeze pending review")
    page.click("section.cap-change button[type=submit]")
    page.locator("#changed").wait_for()
    assert page.locator("#cap").inner_text() == "0.5"
    assert page.locator("#stopped").is_visible()
    assert world.platform.control.get_tenant("label").epsilon_cap == 0.5
    shot(page, "07-cap-lowered")

    page.fill("#cap-input", "abc")
    page.fill("#reason-input", "a typo, to see the error page")
    page.click("section.cap-change button[type=submit]")
    assert page.locator("h1").inner_text() == "Invalid input"
    assert "field 'cap'" in page.locator(".reason").inner_text()
