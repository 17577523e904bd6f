"""The platform-wide view, the regional audit API between regions, and the reports' records
from other regions' ledgers (refusals) and of the global tier (exports)."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from atlasrec.control.officers import Officers, fingerprint
from atlasrec.dataplane.dp_runs import DpRunTable, budget_state
from atlasrec.kdf import derive_key
from atlasrec.tenancy import Region, SharingPolicy
from audit.access import REFUSED
from audit.ledger_answers import NOT_CONSULTED, LedgerAnswer, all_refusals, refusal_ledgers
from audit.reports import FEDERATION_EXPORTED, OTHER_TENANT
from audit.ui import peers as peers_module
from audit.ui.peer_tokens import PURPOSE, mint, peer_signer
from audit.ui.sessions import Signer
from server.global_tier import EXPORTED
from serving.app import create_app
from tests.audit.conftest import ClientFactory
from tests.utils.audit import AuditWorld, sign_in
from tests.utils.browser import serving
from tests.utils.platform_view import DOWN, record_export, regional_servers, seed_sg

SECTION = re.compile(r'<tbody data-region="(\w+)">(.*?)</tbody>', re.S)

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def peers(world: AuditWorld) -> Iterator[dict[Region, str]]:
    """US and SG on real servers (EU is the page's own app), IN down; lion and SG refusals."""
    seed_sg(world)
    with regional_servers(world, [Region.US, Region.SG]) as bases:
        yield bases


def signed_in(app_client: ClientFactory, world: AuditWorld, officer: str) -> TestClient:
    client = app_client(Region.EU)
    assert sign_in(client, officer, world.passwords[officer]).status_code == 303
    return client


def sections(html: str) -> dict[str, str]:
    return dict(SECTION.findall(html))


def spent_of(world: AuditWorld, tenant_id: str) -> str:
    platform = world.platform
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    with plane.session(scope, actor="test", action="test.read") as session:
        runs = DpRunTable(session, plane.ledger).runs()
    tenant = platform.control.get_tenant(tenant_id)
    return f"{budget_state(runs, cap=tenant.epsilon_cap, delta=tenant.delta).spent:.3f}"


def refusals_of(world: AuditWorld, region: Region) -> list[dict[str, object]]:
    records = world.platform.plane(region).ledger.records(action=REFUSED, limit=None)
    return [json.loads(r.details) | {"actor": r.actor} for r in records]


def token(world: AuditWorld, officer_id: str, audience: Region) -> str:
    officer = Officers(world.platform.control.engine).get(officer_id)
    assert officer is not None
    signer = peer_signer(world.platform.secret)
    return mint(signer, officer_id, fingerprint(officer), Region.EU, audience)


def api(base: str, path: str, bearer: str | None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.get(f"{base}/audit/api/v1{path}", params=params, headers=headers, timeout=10)


def test_the_platform_page_lists_every_authorised_region(
    app_client: ClientFactory, world: AuditWorld, peers: dict[Region, str]
) -> None:
    page = signed_in(app_client, world, "po-all").get("/audit/platform")
    assert page.status_code == 200 and 'href="/audit/platform"' in page.text
    found = sections(page.text)
    assert list(found) == ["eu", "in", "sg", "us"]
    expected = {"eu": ["label", "shop"], "sg": ["lion"], "us": ["far"]}
    for region, tenants in expected.items():
        assert re.findall(r'data-tenant="([\w-]+)"', found[region]) == tenants
        for tenant_id in tenants:
            row = found[region].split(f'data-tenant="{tenant_id}"')[1].split("</tr>")[0]
            cap = world.platform.control.get_tenant(tenant_id).epsilon_cap
            assert f'data-field="spent">{spent_of(world, tenant_id)}<' in row
            assert f'data-field="cap">{cap:g}<' in row
    assert f'href="{peers[Region.US]}/audit/tenants/far"' in found["us"]
    assert 'href="/audit/tenants/shop"' in found["eu"]
    assert "not answering" in found["in"] and "connection refused" in found["in"]
    assert "2 tenant(s)" in found["eu"] and "not answering" not in found["sg"]
    assert "Not answering: in." in page.text


@sqlite_only
def test_a_region_without_an_endpoint_is_shown_as_not_answering(
    app_client: ClientFactory, world: AuditWorld, peers: dict[Region, str]
) -> None:
    world.platform.control.set_region_endpoint(Region.SG, None)
    found = sections(signed_in(app_client, world, "po-all").get("/audit/platform").text)
    assert "no endpoint registered" in found["sg"] and "lion" not in found["sg"]
    assert "far" in found["us"]


@sqlite_only
def test_an_officer_of_eu_sees_only_eu(
    app_client: ClientFactory, world: AuditWorld, peers: dict[Region, str]
) -> None:
    page = signed_in(app_client, world, "po-eu").get("/audit/platform")
    assert page.status_code == 200 and list(sections(page.text)) == ["eu"]
    assert "far" not in page.text and "lion" not in page.text


@sqlite_only
def test_a_tenant_officer_is_refused_and_audited(
    app_client: ClientFactory, world: AuditWorld
) -> None:
    client = signed_in(app_client, world, "to-shop")
    assert 'href="/audit/platform"' not in client.get("/audit/tenants").text
    page = client.get("/audit/platform")
    assert page.status_code == 403
    assert {"attempted": "audit.platform", "officer": "to-shop"}.items() <= refusals_of(
        world, Region.EU
    )[-1].items()


@sqlite_only
def test_the_summary_api_answers_a_valid_token_with_aggregates_only(
    world: AuditWorld, peers: dict[Region, str]
) -> None:
    answer = api(peers[Region.SG], "/summary", token(world, "po-all", Region.SG))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    (lion,) = body["tenants"]
    assert lion["tenant_id"] == "lion" and f"{lion['epsilon_spent']:.3f}" == spent_of(world, "lion")
    assert lion["runs"] == 1 and lion["rounds"] == 0 and lion["refusals_24h"] == 1
    assert set(lion) == {
        "tenant_id", "name", "sharing", "epsilon_cap", "epsilon_spent", "epsilon_remaining",
        "used_pct", "exhausted", "runs", "rounds", "refusals_24h", "flags",
    }  # fmt: skip
    assert body["totals"]["tenants"] == 1 and body["region"] == "sg"


@sqlite_only
def test_the_summary_flags_a_tenant_near_its_cap(
    world: AuditWorld, peers: dict[Region, str]
) -> None:
    world.platform.control.set_epsilon_cap(
        "lion", expected=world.platform.control.get_tenant("lion").epsilon_cap, new=1.0
    )
    (lion,) = api(peers[Region.SG], "/summary", token(world, "po-all", Region.SG)).json()["tenants"]
    assert lion["used_pct"] >= 80 and "budget_near_cap" in lion["flags"]
    assert ("budget_exhausted" in lion["flags"]) == lion["exhausted"]
    assert "budget" in lion["flags"]  # the kind of its audit.alerts alert


def forged(world: AuditWorld) -> str:
    officer = Officers(world.platform.control.engine).get("po-all")
    assert officer is not None
    session_key = Signer.for_region(world.platform.secret, "us")  # a session key is no peer key
    payload = {"o": "po-all", "f": fingerprint(officer), "iss": "eu", "aud": "us"}
    return session_key.sign(PURPOSE, payload, 60)


def expired(world: AuditWorld) -> str:
    officer = Officers(world.platform.control.engine).get("po-all")
    assert officer is not None
    payload = {"o": "po-all", "f": fingerprint(officer), "iss": "eu", "aud": "us"}
    return peer_signer(world.platform.secret).sign(PURPOSE, payload, -1)


@sqlite_only
def test_bad_tokens_are_refused_and_audited_where_they_arrive(
    world: AuditWorld, peers: dict[Region, str]
) -> None:
    us = peers[Region.US]
    other_secret = Signer(derive_key(b"another platform" * 2, "atlasrec/audit-peer-api"))
    cases = [
        (None, 401, "missing peer token"),
        ("not-a-token", 401, "invalid peer token"),
        (forged(world), 401, "invalid peer token"),
        (expired(world), 401, "invalid peer token"),
        (mint(other_secret, "po-all", "x", Region.EU, Region.US), 401, "invalid peer token"),
        (token(world, "po-all", Region.SG), 401, "is for region 'sg', not 'us'"),
        (token(world, "po-eu", Region.US), 403, "no authority in region 'us'"),
    ]
    for bearer, status, reason in cases:
        before = len(refusals_of(world, Region.US))
        answer = api(us, "/summary", bearer)
        assert answer.status_code == status and reason in answer.json()["detail"], answer.text
        assert len(answer.json()["detail"].splitlines()) == 1
        records = refusals_of(world, Region.US)
        assert len(records) == before + 1 and reason in str(records[-1]["reason"])
        assert records[-1]["attempted"] == "audit.api.summary"
    assert all(r["attempted"] != "audit.api.summary" for r in refusals_of(world, Region.SG))


@sqlite_only
def test_a_disabled_officer_or_a_changed_password_voids_the_token(
    world: AuditWorld, peers: dict[Region, str]
) -> None:
    us, officers = peers[Region.US], Officers(world.platform.control.engine)
    before_change = token(world, "po-all", Region.US)
    officers.reset_password("po-all")
    answer = api(us, "/summary", before_change)
    assert answer.status_code == 401 and "password change" in answer.json()["detail"]
    assert api(us, "/summary", token(world, "po-all", Region.US)).status_code == 200
    fresh = token(world, "po-all", Region.US)
    officers.disable("po-all")
    answer = api(us, "/summary", fresh)
    assert answer.status_code == 403 and "disabled" in answer.json()["detail"]
    assert [r["reason"] for r in refusals_of(world, Region.US)][-2:] == [
        "peer token predates the officer's password change",
        "officer 'po-all' is disabled",
    ]


@sqlite_only
def test_the_refusals_api_redacts_other_tenants_for_a_tenant_officer(
    world: AuditWorld, peers: dict[Region, str]
) -> None:
    sg = peers[Region.SG]
    as_platform = api(sg, "/refusals", token(world, "po-eu", Region.SG), tenant="shop").json()
    assert [r["tenant_id"] for r in as_platform["refusals"]] == ["lion", "shop"]  # newest first
    assert as_platform["truncated"] is False
    as_tenant = api(sg, "/refusals", token(world, "to-shop", Region.SG), tenant="shop").json()
    assert [r["tenant_id"] for r in as_tenant["refusals"]] == [OTHER_TENANT, "shop"]
    assert "lion" not in json.dumps(as_tenant)
    refused = api(sg, "/refusals", token(world, "to-shop", Region.SG), tenant="lion")
    assert refused.status_code == 403 and "may not see tenant 'lion'" in refused.json()["detail"]
    assert refusals_of(world, Region.SG)[-1]["attempted"] == "audit.api.refusals"
    missing = api(sg, "/refusals", token(world, "po-eu", Region.SG))
    assert missing.status_code == 422 and "tenant" in missing.json()["detail"]


def test_the_residency_report_gathers_refusals_from_every_region(
    app_client: ClientFactory, world: AuditWorld, peers: dict[Region, str]
) -> None:
    client = signed_in(app_client, world, "po-eu")
    page = client.get("/audit/tenants/shop/residency")
    assert page.status_code == 200
    sg_rows = re.findall(r'<tr data-ledger="sg">(.*?)</tr>', page.text, re.S)
    assert len(sg_rows) == 2 and all("test.sg_read" in row for row in sg_rows)
    assert '<tr data-ledger="eu">' in page.text
    assert "<strong>not answering</strong>" in page.text and DOWN.value in page.text
    assert "may be incomplete" in page.text
    assert "No crossing attempt was refused" not in page.text
    report = client.get("/audit/tenants/shop/report.json").json()
    assert {r["ledger_region"] for r in report["refusals"]} == {"eu", "sg"}
    assert report["refusals_complete"] is False
    lines = {line["region"]: line for line in report["refusal_ledgers"]}
    assert lines["sg"]["answered"] and lines["sg"]["records"] == 2
    assert not lines["in"]["answered"] and "connection refused" in lines["in"]["reason"]
    rows = list(csv.DictReader(io.StringIO(client.get("/audit/tenants/shop/report.csv").text)))
    assert {r["region"] for r in rows if r["record_type"] == "refusal"} == {"eu", "sg"}
    ledgers = {r["region"]: r["status"] for r in rows if r["record_type"] == "refusal_ledger"}
    assert ledgers == {"eu": "answered", "sg": "answered", "us": "answered", "in": "not answering"}
    assert "test.sg_read" in client.get("/audit/tenants/shop/report").text


@sqlite_only
def test_no_refusal_is_claimed_only_when_every_region_answered(
    app_client: ClientFactory, world: AuditWorld, peers: dict[Region, str]
) -> None:
    world.platform.create_tenant("quiet", region=Region.EU, sharing=SharingPolicy.SOLO, actor="t")
    client = signed_in(app_client, world, "po-eu")
    page = client.get("/audit/tenants/quiet/residency").text
    assert "No refused crossing attempt in the ledgers that answered" in page
    assert "No crossing attempt was refused" not in page
    app = create_app(DOWN, platform=world.platform, preload=False, refresh=False)
    with serving(app) as base:
        world.platform.control.set_region_endpoint(DOWN, base)
        page = client.get("/audit/tenants/quiet/residency").text
    assert "No crossing attempt was refused" in page and "not answering" not in page


def test_both_reports_list_the_global_exports_the_tenant_contributed_to(
    app_client: ClientFactory, world: AuditWorld
) -> None:
    assert FEDERATION_EXPORTED == EXPORTED
    record_export(world, "gs-0001", {"shop": 0.416, "other": 0.5})
    record_export(world, "gs-0002", {"other": 0.5})
    client = signed_in(app_client, world, "po-eu")
    for path in ("residency", "report"):
        page = client.get(f"/audit/tenants/shop/{path}").text
        row = page.split('<tr data-share="gs-0001">')[1].split("</tr>")[0]
        assert "fedrun0001" in row and "shop: 0.416, other: 0.500" in row and "4096" in row
        assert "key-1" in row and "global" in row and "gs-0002" not in page
        assert "standalone ε of its run of that round" in page
    (exported,) = client.get("/audit/tenants/shop/report.json").json()["federation_exports"]
    assert exported["share_version"] == "gs-0001" and exported["round"] == 2
    assert exported["contributors"] == [
        {"tenant_id": "shop", "epsilon_standalone": 0.416},
        {"tenant_id": "other", "epsilon_standalone": 0.5},
    ]
    rows = csv.DictReader(io.StringIO(client.get("/audit/tenants/shop/report.csv").text))
    assert [r["id"] for r in rows if r["record_type"] == "federation_export"] == ["gs-0001"]
    label = client.get("/audit/tenants/label/report.json").json()
    assert label["federation_exports"] == []
    as_tenant = signed_in(app_client, world, "to-shop").get("/audit/tenants/shop/residency").text
    assert f"shop: 0.416, {OTHER_TENANT} x1 (withheld)" in html.unescape(as_tenant)
    row = as_tenant.split('<tr data-share="gs-0001">')[1].split("</tr>")[0]
    assert not re.search(r"\bother\b|0\.500", row)  # neither the id nor the epsilon


def test_ledger_answers_list_every_region_once() -> None:
    row = {"seq": 1, "ts": "2026-01-01T00:00:00+00:00", "details": {}}
    sg = LedgerAnswer(Region.SG, [row | {"seq": 7}], truncated=True)
    home_again = LedgerAnswer(Region.EU, [row])  # the home ledger is read in place, not asked
    rows = all_refusals(Region.EU, [row], [sg, home_again])
    assert [(r["ledger_region"], r["seq"]) for r in rows] == [("eu", 1), ("sg", 7)]
    lines = {line["region"]: line for line in refusal_ledgers(Region.EU, [row], [sg])}
    assert lines["eu"]["records"] == 1 and lines["sg"]["truncated"]
    assert lines["us"]["reason"] == NOT_CONSULTED and not lines["in"]["answered"]


def odd_peer(slow: bool) -> FastAPI:
    """A peer of another kind: a slow answer, or a malformed summary."""
    app = FastAPI()

    @app.get("/audit/api/v1/summary")
    def summary() -> dict[str, object]:
        if slow:
            time.sleep(1.0)
        return {"tenants": [{"tenant_id": "lion", "epsilon_spent": "a lot"}], "totals": {}}

    return app


@sqlite_only
def test_a_malformed_or_slow_region_is_not_answering(
    app_client: ClientFactory, world: AuditWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers_module, "PEER_TIMEOUT_S", 0.2)
    with serving(odd_peer(slow=False)) as sg, serving(odd_peer(slow=True)) as us:
        world.platform.control.set_region_endpoint(Region.SG, sg)
        world.platform.control.set_region_endpoint(Region.US, us)
        page = signed_in(app_client, world, "po-all").get("/audit/platform")
    found = sections(page.text)
    assert page.status_code == 200 and "malformed summary" in found["sg"]
    assert "no answer within 0.2 s" in found["us"] and "label" in found["eu"]
