"""The budget chart in a real browser, at the seeded cap and at a cap far above what is spent:
every bar readable, the cap label inside the chart, no two labels overlapping.
"""

from __future__ import annotations

import itertools

from playwright.sync_api import Locator, Page

from atlasrec.control.officers import Officers
from atlasrec.control.tables import CapRaiseRequest
from atlasrec.tenancy import Region
from audit.access import Access, Principal
from audit.cap_requests import approve_raise, set_cap
from tests.utils.audit import AuditWorld
from tests.utils.browser import shot, sign_in

Box = tuple[float, float, float, float]


def box_of(element: Locator) -> Box:
    box = element.bounding_box()
    assert box is not None, "not rendered"
    return (box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"])


def apart(a: Box, b: Box, slack: float = 0.5) -> bool:
    return (
        a[2] <= b[0] + slack or b[2] <= a[0] + slack or a[3] <= b[1] + slack or b[3] <= a[1] + slack
    )


def inside(a: Box, b: Box) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and a[2] <= b[2] and a[3] <= b[3]


def raise_cap(world: AuditWorld, cap: float) -> None:
    """Raise shop's cap as the platform allows it: requested by one officer, approved by another."""
    platform, access = world.platform, Access(world.platform, Region.EU)
    platform.control.max_epsilon_cap = cap  # the settings' default maximum is 20
    request = set_cap(
        platform,
        access,
        officer(world, "to-shop"),
        "shop",
        cap,
        reason="load test of the chart at a large cap",
        expected_cap=10.0,
    )
    assert isinstance(request, CapRaiseRequest)
    approve_raise(platform, access, officer(world, "po-eu"), request.id)
    assert platform.control.get_tenant("shop").epsilon_cap == cap


def officer(world: AuditWorld, officer_id: str) -> Principal:
    account = Officers(world.platform.control.engine).get(officer_id)
    assert account is not None
    return Principal.of(account)


def check_chart(page: Page, cap_label: str) -> None:
    """The chart on the open tenant page reads cleanly."""
    chart = page.locator("svg.budget-chart")
    chart.wait_for()
    svg = box_of(chart)
    bars = chart.locator("rect.bar").all()
    assert len(bars) == 4
    for bar in bars:
        x0, y0, x1, y1 = box_of(bar)
        assert y1 - y0 > 5 and x1 - x0 >= 3, (x0, y0, x1, y1)
    label = chart.locator("text.cap-label")
    assert label.text_content() == cap_label and inside(box_of(label), svg)
    texts = [(t.text_content(), box_of(t)) for t in chart.locator("text").all()]
    for text, box in texts:
        assert inside(box, svg), (text, box, svg)
    for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
        assert apart(box_a, box_b), (a, box_a, b, box_b)


def test_the_chart_reads_at_the_seeded_cap_and_at_a_cap_of_1000(
    page: Page, live: tuple[str, AuditWorld]
) -> None:
    base, world = live
    sign_in(page, base, world, "po-eu")
    page.goto(f"{base}/audit/tenants/shop")
    check_chart(page, "cap 10")
    shot(page, "10-chart-cap-default")

    raise_cap(world, 1000.0)
    page.goto(f"{base}/audit/tenants/shop")
    check_chart(page, "cap 1000")
    change = page.locator("svg.budget-chart text.cap-change-label")
    assert change.text_content() == "cap 10 → 1000"
    shot(page, "10-chart-cap-1000")
