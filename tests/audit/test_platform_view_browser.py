"""The platform view and the cross-region residency report in a real browser (screenshots)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region
from tests.utils.audit import AuditWorld, seed_audit_world
from tests.utils.browser import local_page, shot, sign_in
from tests.utils.platform_view import DOWN, record_export, regional_servers, seed_sg


@pytest.fixture(scope="module")
def regions(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AuditWorld, dict[Region, str]]]:
    """EU, US and SG on real servers sharing one platform (SQLite); IN down."""
    folder: Path = tmp_path_factory.mktemp("platform-view")
    platform = Platform(Settings(home=folder / "home"))
    world = seed_audit_world(platform, folder)
    seed_sg(world)
    record_export(world, "gs-0001", {"shop": 0.416, "other": 0.5})
    with regional_servers(world, [Region.EU, Region.US, Region.SG]) as bases:
        yield world, bases
    platform.close()


@pytest.fixture
def eu_page(browser: Browser, regions: tuple[AuditWorld, dict[Region, str]]) -> Iterator[Page]:
    """A browser that may reach the three regional servers, signed in as po-all at EU."""
    world, bases = regions
    with local_page(browser, list(bases.values())) as page:
        sign_in(page, bases[Region.EU], world, "po-all")
        yield page


def test_the_platform_view(eu_page: Page, regions: tuple[AuditWorld, dict[Region, str]]) -> None:
    _, bases = regions
    eu_page.click("header.top nav a:has-text('Platform')")
    eu_page.wait_for_url(f"{bases[Region.EU]}/audit/platform")
    section = "table.platform tbody[data-region='{}']".format
    assert eu_page.locator(f"{section('eu')} tr[data-tenant]").count() == 2
    assert eu_page.locator(f"{section('us')} tr[data-tenant='far']").count() == 1
    assert eu_page.locator(f"{section('sg')} tr[data-tenant='lion']").count() == 1
    assert "not answering" in eu_page.inner_text(section(DOWN.value))
    link = eu_page.locator(f"{section('us')} tr[data-tenant='far'] a")
    assert link.get_attribute("href") == f"{bases[Region.US]}/audit/tenants/far"
    shot(eu_page, "30-platform-view")


def test_the_residency_report_shows_another_region_s_refusals(
    eu_page: Page, regions: tuple[AuditWorld, dict[Region, str]]
) -> None:
    _, bases = regions
    eu_page.goto(f"{bases[Region.EU]}/audit/tenants/shop/residency")
    sg_rows = eu_page.locator("table.refusals tr[data-ledger='sg']")
    assert sg_rows.count() == 2 and "test.sg_read" in sg_rows.first.inner_text()
    assert "not answering" in eu_page.inner_text(f"ul.ledgers li[data-ledger='{DOWN.value}']")
    assert "No crossing attempt was refused" not in eu_page.content()
    assert "shop: 0.416" in eu_page.inner_text("table.exports tr[data-share='gs-0001']")
    shot(eu_page, "31-residency-cross-region")
