"""A raise of a cap in a real browser: a tenant officer requests it, a platform officer
approves it, the requester could not; the chart shows the cap's change."""

from __future__ import annotations

from playwright.sync_api import Browser, Page

from tests.utils.audit import AuditWorld
from tests.utils.browser import local_page, shot, sign_in


def test_a_raise_requested_and_approved_by_two_officers(
    page: Page, browser: Browser, live: tuple[str, AuditWorld]
) -> None:
    base, world = live
    sign_in(page, base, world, "to-shop")
    page.goto(f"{base}/audit/tenants/shop")
    page.fill("#cap-input", "15")
    page.fill("#reason-input", "a second training run for the spring catalogue")
    page.click("section.cap-change form button[type=submit]")
    page.locator("#requested").wait_for()
    assert page.locator("#cap").inner_text() == "10"  # not applied by one officer
    pending = page.locator("table.raise-requests.pending tbody tr")
    assert pending.count() == 1
    assert "waiting for another platform officer" in pending.inner_text()
    assert page.locator("button.approve").count() == 0
    shot(page, "50-raise-requested")

    with local_page(browser, [base]) as approver:
        sign_in(approver, base, world, "po-eu")
        approver.goto(f"{base}/audit/tenants/shop")
        row = approver.locator("table.raise-requests.pending tbody tr")
        assert "to-shop" in row.inner_text() and "15" in row.inner_text()
        shot(approver, "51-raise-waiting-for-approval")
        approver.click("button.approve")
        approver.locator("#approved").wait_for()
        assert approver.locator("#cap").inner_text() == "15"
        decided = approver.locator("table.raise-requests.decided tbody tr").inner_text()
        assert "approved" in decided and "po-eu" in decided and "to-shop" in decided
        changes = approver.locator("table.caps tbody tr").first.inner_text()
        assert "officer:po-eu" in changes and "to-shop" in changes
        assert approver.locator("svg.budget-chart polyline.cap-line").count() == 1
        shot(approver, "52-raise-approved")
    assert world.platform.control.get_tenant("shop").epsilon_cap == 15.0

    page.goto(f"{base}/audit/tenants/shop")
    page.fill("#cap-input", "999")
    page.fill("#reason-input", "far more than the platform allows")
    page.click("section.cap-change form button[type=submit]")
    assert page.locator("h1").inner_text() == "Invalid input"
    assert "above the platform's maximum epsilon cap" in page.locator(".reason").inner_text()
    assert page.locator("header nav").count() == 1  # the error page keeps the navigation
    shot(page, "53-cap-above-maximum")
