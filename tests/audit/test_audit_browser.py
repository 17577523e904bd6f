"""The audit UI in a real browser: headless Chromium (Debian's) driven by Playwright.

A real uvicorn server runs the EU app in a thread; the browser may reach nothing else (every
other request is aborted and reported). Screenshots go to `test-artifacts/audit-ui/`.
"""

from __future__ import annotations

from playwright.sync_api import Page

from atlasrec.tenancy import Region
from tests.utils.audit import AuditWorld
from tests.utils.browser import ARTIFACTS, shot, sign_in


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
