"""The audit log in a real browser: a page of federation records stays short and readable,
and a request id opens its lineage."""

from __future__ import annotations

import hashlib

from playwright.sync_api import Page

from atlasrec.tenancy import Region
from tests.utils.audit import FED_RUN, AuditWorld
from tests.utils.browser import shot, sign_in

ROUNDS = 38  # with the world's 2: the 40 records of the page reported 5,326 px tall
MAX_HEIGHT = 2600
"""At 1280 px wide: the header, filters and pager take about 300 px, which leaves 57 px a
record: two or three lines of key/value details. Measured: 2,207 px (two lines a record);
the reported page of raw JSON took 5,326 px (140 px a record)."""


def seed_rounds(world: AuditWorld) -> None:
    """Federation records as the aggregator writes them: rounds, exports, exclusions."""
    ledger = world.platform.plane(Region.EU).ledger
    for n in range(3, ROUNDS + 3):
        kind = n % 3
        if kind == 2:
            ledger.append(
                actor="aggregator:eu",
                action="federation.exported",
                subject=f"global-share:20261206T1200{n:02d}000000Z-{n:06x}",  # a version
                details={
                    "region": "eu",
                    "federation_run": FED_RUN,
                    "round": n,
                    "weight": 120.5 * n,
                    "key_id": hashlib.sha256(f"key{n}".encode()).hexdigest(),
                    "contributors": {"shop": 0.4161 + n / 1000, "other": 0.5},
                    "bytes": 81_920 + n,
                },
            )
        elif kind == 1:
            ledger.append(
                actor="aggregator:eu",
                action="federation.excluded",
                subject="federation:eu",
                tenant_id="label",
                details={"region": "eu", "reason": "budget cap reached", "round": n},
            )
        else:
            ledger.append(
                actor="aggregator:eu",
                action="federation.round",
                subject=f"federation:{FED_RUN}/{n}",
                details={
                    "region": "eu",
                    "round": n,
                    "status": "completed",
                    "backbone_in": f"bb-v{n - 1}",
                    "backbone_out": f"bb-v{n}",
                    "participants": ["other", "shop"],
                    "epsilon": {"shop": 0.416, "other": 0.5},
                    "global_share": hashlib.sha256(f"share{n}".encode()).hexdigest()[:32],
                },
            )


def test_a_page_of_federation_records_is_short_and_links_requests(
    page: Page, live: tuple[str, AuditWorld]
) -> None:
    base, world = live
    seed_rounds(world)
    request_id = world.requests["shop"]
    world.platform.plane(Region.EU).ledger.append(
        actor="serving",
        action="serving.requests",
        subject="tenant:shop",
        tenant_id="shop",
        details={"count": 1, "first_request_id": request_id, "last_request_id": request_id},
    )
    sign_in(page, base, world, "po-eu")
    page.goto(f"{base}/audit/log?action=federation.&limit=50")
    rows = page.locator("table.log tbody tr.record")
    assert rows.count() == ROUNDS + 2
    assert page.locator("table.log td.details > dl.kv").count() == ROUNDS + 2
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < MAX_HEIGHT, f"{ROUNDS + 2} records take {height} px"
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # no sideways scroll
    assert "records 1\N{EN DASH}40 of 40 matching" in page.locator("#log-count-top").inner_text()
    shot(page, "20-audit-log")

    page.goto(f"{base}/audit/log?tenant=shop&action=serving.")
    link = page.locator(f"a.request[title='{request_id}']").first
    link.click()
    page.wait_for_url(f"{base}/audit/lineage?request_id={request_id}")
    assert request_id in page.locator("#lineage").inner_text()
    assert world.model_version in page.locator("#lineage").inner_text()
    shot(page, "21-audit-log-request-lineage")


def test_a_tenant_officer_reads_its_rounds_with_other_tenants_redacted(
    page: Page, live: tuple[str, AuditWorld]
) -> None:
    base, world = live
    sign_in(page, base, world, "to-shop")
    page.goto(f"{base}/audit/log?action=federation.round&limit=25")
    table = page.locator("table.log").inner_text()
    assert page.locator("table.log tbody tr.record").count() >= 2
    assert "(another tenant)" in table and "withheld" in table and "0.416" in table
    assert "other" not in table.replace("another", "") and "0.5" not in table
    shot(page, "22-audit-log-tenant-officer")
