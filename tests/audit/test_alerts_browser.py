"""The alerts inbox in a real browser: a budget alert and a refusal spike for shop."""

from __future__ import annotations

from contextlib import suppress

from playwright.sync_api import Page

from atlasrec.dataplane.dp_runs import DpRunTable
from atlasrec.errors import BoundaryViolation
from atlasrec.repeated_refusals import RepeatedRefusals
from atlasrec.tenancy import Region, Scope
from audit.caps import change_epsilon_cap
from tests.utils.audit import AuditWorld
from tests.utils.browser import shot, sign_in


def seed_alerts(world: AuditWorld) -> None:
    """shop at 85% of a lowered cap, and 14 refused attempts of a US-scoped key just now."""
    platform, shop = world.platform, Scope("shop", Region.EU)
    plane = platform.plane(Region.EU)
    with plane.session(shop, actor="test", action="test.spent") as session:
        spent = DpRunTable(session, plane.ledger).spent()
    change_epsilon_cap(
        platform, "shop", spent / 0.85, reason="budget review after the audit", actor="test"
    )
    refusals = RepeatedRefusals(plane.boundary, window_s=3600, sweep=False)
    for _ in range(14):
        with suppress(BoundaryViolation):
            refusals.admit("key-1", Scope("shop", Region.US), actor="key:key-1", action="serve")
    refusals.close()


def test_the_alerts_inbox(page: Page, live: tuple[str, AuditWorld]) -> None:
    base, world = live
    seed_alerts(world)
    sign_in(page, base, world, "po-eu")
    badge = page.locator("table.tenants tr[data-tenant='shop'] td.alerts")
    assert badge.inner_text() == "2 alerts"
    assert page.locator("table.tenants tr[data-tenant='label'] td.alerts").inner_text() == "none"
    assert page.locator("header.top a.alerts .count").inner_text() == "2"
    shot(page, "41-tenants-with-alerts")

    page.click("header.top a.alerts")
    page.wait_for_url(f"{base}/audit/alerts")
    rows = page.locator("table.alerts tbody tr")
    kinds = rows.evaluate_all("rs => rs.map(r => r.dataset.tenant + ' ' + r.dataset.kind)")
    assert sorted(kinds) == ["shop budget", "shop refusal_spike"]  # equal severity: by time
    budget = page.locator("tr[data-kind='budget']").inner_text()
    spike = page.locator("tr[data-kind='refusal_spike']").inner_text()
    assert "15 refused attempts in the last hour" in spike  # with the seeded one of label
    assert "budget nearly spent" in budget and "(85%)" in budget
    for row in rows.all():  # a time, and a badge the stylesheet colours
        assert row.locator("td.since").inner_text()[:2] == "20"
        colour = row.locator(".badge").evaluate("b => getComputedStyle(b).backgroundColor")
        assert colour == "rgb(255, 250, 235)"
    shot(page, "40-alerts")

    page.locator("tr[data-kind='budget'] a.evidence").click()
    page.wait_for_url(f"{base}/audit/tenants/shop")
