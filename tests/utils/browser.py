"""Browser-test support: real uvicorn servers in threads, and headless Chromium (Debian's)
driven by Playwright that may reach nothing but those servers.

The fixtures (`live`, `browser`, `page`) are in `tests/audit/conftest.py`; screenshots go
to `test-artifacts/audit-ui/`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route

from tests.utils.audit import AuditWorld

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


def free_port() -> int:
    """A TCP port free on this host now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """`app` behind a real uvicorn server in a thread; its base URL while the block runs."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def launch(playwright: Playwright) -> Browser:
    """Headless Debian Chromium with no background network use."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=OFFLINE_FLAGS
    )


@contextmanager
def local_page(browser: Browser, bases: Sequence[str]) -> Iterator[Page]:
    """A fresh context (no cookies) whose page may reach only `bases`; anything else fails."""
    context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def only_local(route: Route) -> None:
        if any(route.request.url.startswith(base) for base in bases):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
    assert outside == [], f"the UI tried to reach the network: {outside}"


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot kept under test-artifacts/audit-ui/."""
    path = ARTIFACTS / "audit-ui" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, base: str, world: AuditWorld, officer: str) -> None:
    """Sign `officer` in through the form; lands on the tenants page."""
    page.goto(f"{base}/audit/tenants")
    assert page.url.startswith(f"{base}/audit/login")
    page.fill("#officer_id", officer)
    page.fill("#password", world.passwords[officer])
    page.click("section.login button[type=submit]")
    page.wait_for_url(f"{base}/audit/tenants")
