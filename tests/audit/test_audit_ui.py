"""The audit UI over HTTP: each role sees exactly what it may; sign-in, forms and errors."""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from atlasrec.control.officers import Officers
from atlasrec.dataplane.tables import ServedRequest
from atlasrec.drift import CHECKED, DriftReport
from atlasrec.evaluation.drift import categorical_drift
from atlasrec.experiments import create, decide
from atlasrec.models.bundle import KIND
from atlasrec.outcomes import refresh_outcomes
from atlasrec.privacy_audit import AUDITED
from atlasrec.releases import register
from atlasrec.tenancy import Region, Scope
from audit.access import REFUSED
from audit.caps import CAP_CHANGED
from audit.reports import CSV_COLUMNS, OTHER_TENANT
from audit.ui.sessions import SESSION_COOKIE
from tests.audit.conftest import ClientFactory
from tests.utils.audit import (
    OFFICERS,
    TRAIN,
    AuditWorld,
    charge,
    csrf_of,
    serve_record,
    sign_in,
)

VISIBLE_IN_EU = {
    "po-eu": {"shop", "label"},
    "po-all": {"shop", "label"},
    "to-shop": {"shop"},
    "to-label": {"label"},
}
TENANT_ROW = re.compile(r'<tr data-tenant="([^"]+)"')
LOG_ROW = re.compile(r'data-seq="(\d+)" data-tenant="([^"]*)" data-action="([^"]+)"')
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
"""For what does not depend on the database (sessions, forms, headers)."""


def signed_in(factory: ClientFactory, world: AuditWorld, officer: str) -> TestClient:
    client = factory(Region.EU)
    response = sign_in(client, officer, world.passwords[officer])
    assert response.status_code == 303, response.text
    return client


def refusals(world: AuditWorld) -> list[dict[str, object]]:
    records = world.platform.plane(Region.EU).ledger.records(action=REFUSED, limit=None)
    return [{"actor": r.actor, "tenant": r.tenant_id, **json.loads(r.details)} for r in records]


@pytest.mark.parametrize("officer", sorted(VISIBLE_IN_EU))
def test_each_role_sees_exactly_its_tenants(
    world: AuditWorld, app_client: ClientFactory, officer: str
) -> None:
    client = signed_in(app_client, world, officer)
    visible = VISIBLE_IN_EU[officer]
    listed = client.get("/audit/tenants")
    assert listed.status_code == 200
    assert set(TENANT_ROW.findall(listed.text)) == visible
    platform_officer = officer.startswith("po-")
    for tenant in ("shop", "label", "far", "ghost"):
        for suffix in (
            "",
            "/residency",
            "/drift",
            "/releases",
            "/report",
            "/report.json",
            "/report.csv",
        ):
            response = client.get(f"/audit/tenants/{tenant}{suffix}")
            if tenant in visible:
                expected = 200
            elif tenant == "ghost" and platform_officer:
                expected = 404  # they could see it if it existed: say it does not
            else:
                expected = 403
            assert response.status_code == expected, (tenant, suffix, response.text[-400:])
            if expected == 403:
                assert "Refused" in response.text
                assert response.headers["content-type"].startswith("text/html")
                assert 'href="/audit/log"' in response.text  # the navigation stays
    denied = {r["tenant"] for r in refusals(world) if r["actor"] == f"officer:{officer}"}
    assert denied == ({"far"} if platform_officer else {"shop", "label", "far"} - visible) | (
        set() if platform_officer else {None}  # ghost: not named, since it does not exist
    )


@pytest.mark.parametrize("officer", ["po-us", "to-far"])
def test_officers_without_authority_here_cannot_sign_in(
    world: AuditWorld, app_client: ClientFactory, officer: str
) -> None:
    client = app_client(Region.EU)
    response = sign_in(client, officer, world.passwords[officer])
    assert response.status_code == 403
    assert "no authority in region 'eu'" in html.unescape(response.text)
    assert "atlasrec_audit" not in client.cookies
    assert client.get("/audit/tenants", follow_redirects=False).status_code == 303
    assert any(r["attempted"] == "audit.sign_in" for r in refusals(world))
    # the same officer may sign in where they have authority
    us = app_client(Region.US)
    assert sign_in(us, officer, world.passwords[officer]).status_code == 303
    assert set(TENANT_ROW.findall(us.get("/audit/tenants").text)) == {"far"}


@sqlite_only
def test_pages_name_their_icon_and_it_is_served(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    client = signed_in(app_client, world, "po-all")
    assert 'rel="icon" href="/audit/static/favicon.svg"' in client.get("/audit/tenants").text
    icon = client.get("/audit/static/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert client.get("/audit/static/other.svg").status_code == 404


@sqlite_only
def test_a_session_is_bound_to_its_region(world: AuditWorld, app_client: ClientFactory) -> None:
    eu = signed_in(app_client, world, "po-all")
    us = app_client(Region.US)
    us.cookies.set("atlasrec_audit", eu.cookies["atlasrec_audit"], path="/audit")
    response = us.get("/audit/tenants", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/audit/login")


def test_the_log_shows_what_the_officer_may_read(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    shop = signed_in(app_client, world, "to-shop")
    page = shop.get("/audit/log?limit=1000")
    assert page.status_code == 200 and "audit chain intact" in page.text
    rows = LOG_ROW.findall(page.text)
    # its own records, and those naming it: rounds it joined, a refused read of its data
    assert rows and {tenant for _, tenant, _ in rows} == {"shop", "", OTHER_TENANT}
    assert shop.get("/audit/log?tenant=label").status_code == 403
    charged = LOG_ROW.findall(shop.get("/audit/log?action=dp.charged").text)
    assert len(charged) == 4 and {a for _, _, a in charged} == {"dp.charged"}

    platform = signed_in(app_client, world, "po-eu")
    rows = LOG_ROW.findall(platform.get("/audit/log?limit=1000").text)
    tenants = {tenant for _, tenant, _ in rows}
    assert {"shop", "label", "far", ""} <= tenants  # far: its refused attempt at EU's border
    rounds = LOG_ROW.findall(platform.get("/audit/log?action=federation.round").text)
    assert len(rounds) == 2
    found = LOG_ROW.findall(platform.get("/audit/log?q=bb-v2").text)
    assert [a for _, _, a in found] == ["federation.round"]
    paged = LOG_ROW.findall(platform.get("/audit/log?limit=3").text)
    older = LOG_ROW.findall(platform.get(f"/audit/log?limit=3&before={paged[-1][0]}").text)
    assert len(paged) == 3 and int(older[0][0]) == int(paged[-1][0]) - 1
    assert platform.get("/audit/log?limit=0").status_code == 422
    for bad in ("q=%00", "action=%00", "action=DROP%20TABLE", "before=99999999999999999999"):
        response = platform.get(f"/audit/log?{bad}")
        assert response.status_code == 422, bad
        assert f"field '{bad.split('=')[0]}'" in html.unescape(response.text)
    assert "field 'limit'" in html.unescape(platform.get("/audit/log?limit=x").text)


def test_lineage_pages(world: AuditWorld, app_client: ClientFactory) -> None:
    client = signed_in(app_client, world, "po-eu")
    page = client.get(f"/audit/lineage?request_id={world.requests['shop']}")
    assert page.status_code == 200
    text = page.text
    assert world.model_version in text and world.snapshot in text
    assert "verified against the ingested files" in text
    assert "5 users, 10 items, 30 interactions" in text
    assert world.runs["shop"][3] in text  # the DP run that trained the model
    assert "bb-v1" in text and "bb-v2" in text and "(initial)" in text
    label = client.get(f"/audit/lineage?request_id={world.requests['label']}")
    assert label.status_code == 200 and "no trained model" in label.text
    missing = client.get("/audit/lineage?request_id=" + "0" * 32)
    assert missing.status_code == 404 and "no served request" in missing.text
    bad = client.get("/audit/lineage?request_id=../etc")
    assert bad.status_code == 422 and "field 'request_id'" in html.unescape(bad.text)

    other = signed_in(app_client, world, "to-label")
    assert other.get(f"/audit/lineage?request_id={world.requests['shop']}").status_code == 403
    assert any(
        r["actor"] == "officer:to-label" and r["attempted"] == "audit.lineage"
        for r in refusals(world)
    )


@sqlite_only
def test_sign_in_is_protected(world: AuditWorld, app_client: ClientFactory) -> None:
    client = app_client(Region.EU)
    wrong = sign_in(client, "po-eu", "not-the-password")
    assert wrong.status_code == 401 and "unknown officer or wrong password" in wrong.text
    assert "atlasrec_audit" not in client.cookies
    form = client.get("/audit/login")
    forged = client.post(
        "/audit/login",
        data={"officer_id": "po-eu", "password": world.passwords["po-eu"], "csrf_token": "x"},
    )
    assert forged.status_code == 403 and "field 'csrf_token'" in html.unescape(forged.text)
    assert form.status_code == 200

    ok = sign_in(client, "po-eu", world.passwords["po-eu"])
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/audit" in cookie
    assert ok.headers["location"] == "/audit/tenants"
    assert client.get("/audit/tenants").status_code == 200
    assert (
        "frame-ancestors 'none'" in client.get("/audit/tenants").headers["content-security-policy"]
    )
    body, mac = client.cookies["atlasrec_audit"].split(".")
    client.cookies.clear()
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    client.cookies.set("atlasrec_audit", f"{forged_body}.{mac}", path="/audit")
    assert client.get("/audit/tenants", follow_redirects=False).status_code == 303

    limited = app_client(Region.EU)
    for _ in range(5):
        assert sign_in(limited, "to-shop", "wrong").status_code == 401
    blocked = sign_in(limited, "to-shop", world.passwords["to-shop"])
    assert blocked.status_code == 429


@sqlite_only
def test_sessions_end_with_logout_disable_and_password_reset(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    client = signed_in(app_client, world, "po-eu")
    page = client.get("/audit/tenants")
    cookie = client.cookies.get(SESSION_COOKIE)
    assert client.post("/audit/logout", data={"csrf_token": "nope"}).status_code == 403
    out = client.post(
        "/audit/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert out.status_code == 303
    assert client.get("/audit/tenants", follow_redirects=False).status_code == 303
    replayed = app_client(Region.EU)  # a copy of the cookie, kept past the sign-out
    replayed.cookies.set(SESSION_COOKIE, cookie or "", path="/audit")
    assert replayed.get("/audit/tenants", follow_redirects=False).status_code == 303
    ledger = world.platform.plane(Region.EU).ledger
    assert ledger.records(action="officer.signed_out")
    expired = client.post(
        "/audit/tenants/shop/cap",
        data={"cap": "1", "reason": "x" * 20, "csrf_token": "t"},
        follow_redirects=False,
    )
    assert expired.headers["location"] == "/audit/login?next=%2Faudit%2Ftenants"

    officers = Officers(world.platform.control.engine)
    reset = signed_in(app_client, world, "to-shop")
    officers.reset_password("to-shop")
    assert reset.get("/audit/tenants", follow_redirects=False).status_code == 303
    disabled = signed_in(app_client, world, "to-label")
    officers.disable("to-label")
    assert disabled.get("/audit/tenants", follow_redirects=False).status_code == 303
    assert sign_in(app_client(Region.EU), "to-label", world.passwords["to-label"]).status_code == (
        401
    )


def test_the_cap_form(world: AuditWorld, app_client: ClientFactory) -> None:
    client = signed_in(app_client, world, "po-eu")
    token = csrf_of(client.get("/audit/tenants/shop").text)
    url = "/audit/tenants/shop/cap"
    reason = "quarterly review by the DPO"

    def post(**form: str) -> tuple[int, str]:
        response = client.post(url, data=form, follow_redirects=False)
        return response.status_code, html.unescape(response.text)

    assert post(cap="5", reason=reason, csrf_token="bad")[0] == 403
    for cap in ("abc", "-1", "0", "inf", "nan", "1e9"):
        status, text = post(cap=cap, reason=reason, csrf_token=token)
        assert status == 422 and "field 'cap'" in text, cap
    status, text = post(cap="5", reason="short", csrf_token=token)
    assert status == 422 and "field 'reason'" in text
    status, text = post(cap="5", csrf_token=token)
    assert status == 422 and "field 'reason'" in text
    assert world.platform.control.get_tenant("shop").epsilon_cap == 10.0

    status, text = post(cap="1", reason=reason, csrf_token=token, expected_cap="10.0")
    assert status == 303
    assert world.platform.control.get_tenant("shop").epsilon_cap == 1.0
    [record] = world.platform.plane(Region.EU).ledger.records(action=CAP_CHANGED)
    details = json.loads(record.details)
    assert record.actor == "officer:po-eu" and record.tenant_id == "shop"
    assert (details["old_cap"], details["new_cap"], details["reason"]) == (10.0, 1.0, reason)
    assert details["stops_training"] is True  # 1.318 spent
    page = client.get("/audit/tenants/shop?changed=1").text
    assert "Budget exhausted" in page and reason in page
    assert post(cap="3", reason=reason, csrf_token=token, expected_cap="nan")[0] == 422
    stale = post(cap="3", reason=reason, csrf_token=token, expected_cap="10.0")
    assert stale[0] == 409 and world.platform.control.get_tenant("shop").epsilon_cap == 1.0

    tenant = signed_in(app_client, world, "to-shop")
    token = csrf_of(tenant.get("/audit/tenants/shop").text)
    refused = tenant.post(
        "/audit/tenants/label/cap", data={"cap": "50", "reason": reason, "csrf_token": token}
    )
    assert refused.status_code == 403
    assert world.platform.control.get_tenant("label").epsilon_cap == 10.0


def test_exports(world: AuditWorld, app_client: ClientFactory) -> None:
    client = signed_in(app_client, world, "to-shop")
    response = client.get("/audit/tenants/shop/report.json")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    report = response.json()
    assert report["tenant_id"] == "shop" and report["region"] == "eu"
    assert [r["kind"] for r in report["runs"]] == ["train", "federation", "federation", "train"]
    assert report["budget"]["epsilon_spent"] == pytest.approx(
        report["runs"][-1]["epsilon_total_after"]
    )
    assert report["budget"]["epsilon_remaining"] == pytest.approx(
        10.0 - report["budget"]["epsilon_spent"]
    )
    [artifact] = report["artifacts"]
    assert artifact["version"] == world.model_version and artifact["region"] == "eu"
    assert artifact["attributed"] and artifact["tenant_id"] == "shop"
    [refusal] = report["refusals"]  # label's scope reaching for shop's data
    assert refusal["tenant_id"] == OTHER_TENANT and "label" not in json.dumps(refusal)
    assert [r["round"] for r in report["federation"]["region_rounds"]] == [1, 2]
    assert report["chain"]["ok"]

    csv_text = client.get("/audit/tenants/shop/report.csv").text
    lines = csv_text.splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    kinds = [line.split(",", 1)[0] for line in lines[1:]]
    assert kinds.count("dp_run") == 4 and kinds.count("artifact") == 1
    assert kinds.count("federation_round") == 2 and kinds.count("refusal") == 1
    assert kinds[0] == "budget" and kinds[-1] == "audit_chain"

    platform = signed_in(app_client, world, "po-eu")
    full = platform.get("/audit/tenants/shop/report.json").json()
    assert full["refusals"][0]["tenant_id"] == "label"  # a platform officer sees who tried
    printable = platform.get("/audit/tenants/shop/report")
    assert printable.status_code == 200 and '<svg class="budget-chart"' in printable.text
    assert printable.text.count('class="bar bar-') == 4


@sqlite_only
def test_unknown_pages_and_static(world: AuditWorld, app_client: ClientFactory) -> None:
    client = signed_in(app_client, world, "po-eu")
    assert client.get("/audit/static/audit.css").status_code == 200
    assert client.get("/audit/static/..%2Fsecrets").status_code == 404
    assert client.get("/audit/tenants/" + "x" * 300).status_code == 404
    assert client.get("/audit/", follow_redirects=False).headers["location"] == "/audit/tenants"
    anonymous = app_client(Region.EU)
    response = anonymous.get("/audit/tenants/shop", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/audit/login?next=%2Faudit%2Ftenants%2Fshop"
    assert set(OFFICERS) >= set(VISIBLE_IN_EU)


def test_no_input_makes_a_server_error(world: AuditWorld, app_client: ClientFactory) -> None:
    """Arbitrary text in every path, query and form field: a page or a 4xx, never a 5xx."""
    client = signed_in(app_client, world, "po-eu")
    token = csrf_of(client.get("/audit/tenants/shop").text)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(text=st.text(max_size=80), number=st.integers(min_value=-(2**70), max_value=2**70))
    def check(text: str, number: int) -> None:
        for method, url, params, data in (
            ("GET", f"/audit/tenants/{quote(text, safe='')}", None, None),
            ("GET", "/audit/log", {"tenant": text, "action": text, "q": text}, None),
            ("GET", "/audit/log", {"before": str(number), "limit": str(number)}, None),
            ("GET", "/audit/lineage", {"request_id": text}, None),
            ("POST", "/audit/tenants/label/cap", None,
             {"cap": text, "reason": text, "csrf_token": token, "expected_cap": text}),
            ("POST", "/audit/login", None, {"officer_id": text, "password": text,
                                            "csrf_token": text, "next": text}),
        ):  # fmt: skip
            response = client.request(method, url, params=params, data=data)
            assert response.status_code < 500, (url, params, data, response.text[-300:])

    check()
    assert world.platform.control.get_tenant("label").epsilon_cap == 10.0


@sqlite_only
def test_the_drift_page_shows_the_last_check_and_the_earlier_ones(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    client = signed_in(app_client, world, "to-shop")
    assert 'id="none"' in client.get("/audit/tenants/shop/drift").text
    few = categorical_drift("category_mix", ["a"] * 30, ["b"] * 30)  # too few: no verdict
    shifted = categorical_drift("category_mix", ["a"] * 300, ["a"] * 100 + ["b"] * 200)
    for at, signal in (("08", few), ("09", shifted)):
        checked = f"2026-12-06T{at}:00:00+00:00"
        report = DriftReport("shop", "eu", world.model_version, 0.0, checked, [signal.as_json()])
        world.platform.plane(Region.EU).ledger.append(
            actor="test",
            action=CHECKED,
            subject="tenant:shop",
            tenant_id="shop",
            details=report.as_json(),
        )
    page = client.get("/audit/tenants/shop/drift")
    assert page.status_code == 200
    last, earlier = page.text.split('class="history"')
    assert "drift</span> in category_mix" in last and "jensenshannon" in last
    assert "(no longer live)" not in last
    assert earlier.count("<tr><td>") == 1 and "none" in earlier  # the first check: no verdict


@sqlite_only
def test_the_runs_table_shows_each_releases_empirical_audit(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    platform, scope = world.platform, Scope("shop", Region.EU)
    charge(platform, scope, TRAIN, "train", users=5, model_version=world.model_version)
    client = signed_in(app_client, world, "to-shop")
    assert "pending" in client.get("/audit/tenants/shop").text.split('class="data runs"')[1]
    control = {"epsilon_lower_bound": 1.9, "auc": 0.81}
    audit = {"model_version": world.model_version, "claimed_epsilon": 2.0, "alarm": False}
    details = {**audit, "epsilon_lower_bound": 0.123, "auc": 0.54, "control": control}
    platform.plane(Region.EU).ledger.append(
        actor="test", action=AUDITED, subject="model", tenant_id="shop", details=details
    )
    runs = client.get("/audit/tenants/shop").text.split('class="data runs"')[1]
    assert "0.123 (AUC 0.54; without DP ≥ 1.90, AUC 0.81)" in runs
    assert "ABOVE THE CLAIM" not in runs


@sqlite_only
def test_the_releases_page_shows_versions_decisions_and_online_metrics(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    client = signed_in(app_client, world, "to-shop")
    page = client.get("/audit/tenants/shop/releases")
    assert page.status_code == 200 and world.model_version in page.text
    assert "No online metrics computed yet." in page.text
    scope = Scope("shop", Region.EU)
    with world.platform.plane(Region.EU).session(scope, actor="t", action="t") as session:
        before = len(session.execute(select(ServedRequest)).scalars().all())
    for _ in range(3):
        serve_record(world.platform, scope, world.model_version)
    refresh_outcomes(world.platform, "shop", actor="test")
    after = client.get("/audit/tenants/shop/releases").text
    assert "No online metrics computed yet." not in after
    row = re.search(r"<td class=\"num\">(\d+)</td><td class=\"num\">0\.0000", after)
    assert row is not None and int(row.group(1)) == before + 3  # no clicks yet


@sqlite_only
def test_the_releases_page_lists_experiments_with_their_decision_and_numbers(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    scope = Scope("shop", Region.EU)
    plane = world.platform.plane(Region.EU)
    other = plane.artifacts.publish(
        scope, KIND, lambda f: (f / "weights.bin").write_bytes(b"w"), actor="t", point_latest=False
    )
    register(plane, scope, other.version, live=False, actor="t")
    made = create(
        world.platform,
        "shop",
        arms=[world.model_version, other.version],
        kind="interleave",
        metric="ctr",
        actor="t",
    )
    client = signed_in(app_client, world, "to-shop")
    section = client.get("/audit/tenants/shop/releases").text.split('id="experiments"')[1]
    assert made["id"] in section and "running" in section and other.version in section
    result = {"wins": {"A": 3, "B": 17}, "ties": 80, "log_evidence": 3.4, "threshold": 3.0}
    decide(world.platform, "shop", made["id"], reason="B preferred", result=result, actor="t")
    section = client.get("/audit/tenants/shop/releases").text.split('id="experiments"')[1]
    assert "decided" in section and "B preferred" in section
    assert "wins A 3, B 17, ties 80; evidence 3.40 of 3.00" in section
