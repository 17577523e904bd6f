"""Budget governance: a platform maximum, and raises that take two officers (all audited)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from atlasrec.control.cap_requests import CapRequests
from atlasrec.control.officers import OfficerRole, Officers
from atlasrec.control.service import CapAboveMaximumError
from atlasrec.control.tables import CapRaiseRequest
from atlasrec.errors import InvalidInputError, RefusedError
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from audit.access import REFUSED, Access, Principal
from audit.alerts import RAISE_REQUEST, region_alerts, tenant_alerts
from audit.cap_requests import RAISE_REJECTED, RAISE_REQUESTED, approve_raise, set_cap
from audit.caps import CAP_CHANGED, CAP_REFUSED
from tests.atlasrec.test_cli import cli
from tests.audit.conftest import ClientFactory
from tests.utils.audit import AuditWorld, csrf_of, sign_in

REASON = "a larger cohort needs a second training run"

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def officer(world: AuditWorld, officer_id: str) -> Principal:
    account = Officers(world.platform.control.engine).get(officer_id)
    assert account is not None
    return Principal.of(account)


def records(world: AuditWorld, action: str) -> list[dict[str, Any]]:
    ledger = world.platform.plane(Region.EU).ledger
    return [
        {"actor": r.actor, "tenant": r.tenant_id, **json.loads(r.details)}
        for r in ledger.records(action=action, limit=None)
    ]


def cap(world: AuditWorld, tenant: str = "shop") -> float:
    return world.platform.control.get_tenant(tenant).epsilon_cap


class Officer:
    """A signed-in officer's browser session of the EU app, posting its forms."""

    def __init__(self, factory: ClientFactory, world: AuditWorld, officer_id: str) -> None:
        self.client: TestClient = factory(Region.EU)
        assert sign_in(self.client, officer_id, world.passwords[officer_id]).status_code == 303

    def page(self, tenant: str = "shop") -> str:
        return html.unescape(self.client.get(f"/audit/tenants/{tenant}").text)

    def post(self, path: str, **form: str) -> tuple[int, str]:
        form.setdefault("csrf_token", csrf_of(self.client.get("/audit/tenants/shop").text))
        response = self.client.post(path, data=form, follow_redirects=False)
        return response.status_code, html.unescape(response.text)

    def set_cap(self, value: str, expected: str = "10.0", tenant: str = "shop") -> tuple[int, str]:
        return self.post(
            f"/audit/tenants/{tenant}/cap", cap=value, reason=REASON, expected_cap=expected
        )

    def decide(self, request_id: str, decision: str, reason: str = "") -> tuple[int, str]:
        path = f"/audit/tenants/shop/raise-requests/{request_id}"
        return self.post(path, decision=decision, reason=reason)


def pending(world: AuditWorld) -> list[str]:
    rows = CapRequests(world.platform.control.engine).of_tenant("shop")
    return [r.id for r in rows if r.status == "pending"]


def test_a_raise_is_requested_by_one_officer_and_applied_by_another(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    tenant_officer = Officer(app_client, world, "to-shop")
    status, _ = tenant_officer.set_cap("15")
    assert status == 303 and cap(world) == 10.0  # requested, not applied
    [request_id] = pending(world)
    [requested] = records(world, RAISE_REQUESTED)
    assert requested["actor"] == "officer:to-shop" and requested["requested_cap"] == 15.0
    assert requested["request_id"] == request_id and requested["cap_then"] == 10.0
    page = tenant_officer.page()
    assert request_id in page and "waiting for another platform officer" in page
    assert 'value="approve"' not in page  # a tenant officer is never offered the decision

    platform_officer = Officer(app_client, world, "po-eu")
    assert 'value="approve"' in platform_officer.page()
    status, _ = platform_officer.decide(request_id, "approve")
    assert status == 303 and cap(world) == 15.0 and pending(world) == []
    [changed] = records(world, CAP_CHANGED)
    assert (changed["old_cap"], changed["new_cap"]) == (10.0, 15.0)
    assert changed["actor"] == "officer:po-eu" and changed["approved_by"] == "po-eu"
    assert changed["requested_by"] == "to-shop" and changed["request_id"] == request_id
    report = platform_officer.client.get("/audit/tenants/shop/report.json").json()
    [row] = report["raise_requests"]
    assert (row["status"], row["requested_by"], row["decided_by"]) == (
        "approved",
        "to-shop",
        "po-eu",
    )
    assert [p["cap"] for p in report["cap_history"]][-1] == 15.0  # the chart's cap history


@sqlite_only
def test_lowering_applies_at_once_for_a_tenant_officer(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    status, _ = Officer(app_client, world, "to-shop").set_cap("4")
    assert status == 303 and cap(world) == 4.0 and pending(world) == []
    assert records(world, CAP_CHANGED)[0]["actor"] == "officer:to-shop"


@sqlite_only
def test_the_requester_cannot_approve_their_own_raise(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    po = Officer(app_client, world, "po-eu")
    assert po.set_cap("12")[0] == 303
    [request_id] = pending(world)
    assert 'value="approve"' not in po.page()
    status, text = po.decide(request_id, "approve")
    assert status == 403 and "requested this raise: another platform officer" in text
    assert cap(world) == 10.0 and pending(world) == [request_id]
    [refusal] = [r for r in records(world, REFUSED) if r["attempted"] == "budget.raise_decide"]
    assert refusal["actor"] == "officer:po-eu" and refusal["tenant"] == "shop"
    status, _ = Officer(app_client, world, "po-all").decide(request_id, "approve")
    assert status == 303 and cap(world) == 12.0


@sqlite_only
def test_who_may_not_decide_is_refused_and_audited(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    Officer(app_client, world, "po-eu").set_cap("12")
    [request_id] = pending(world)
    status, text = Officer(app_client, world, "to-shop").decide(request_id, "approve")
    assert status == 403 and "only a platform officer" in text
    access = Access(world.platform, Region.EU)  # the US officer cannot sign in to EU's UI:
    with pytest.raises(RefusedError, match="not authorised for region 'eu'"):  # the CLI path
        approve_raise(world.platform, access, officer(world, "po-us"), request_id)
    attempts = [r for r in records(world, REFUSED) if r["attempted"] == "budget.raise_decide"]
    assert [r["actor"] for r in attempts] == ["officer:to-shop", "officer:po-us"]
    assert cap(world) == 10.0 and pending(world) == [request_id]


@sqlite_only
def test_a_cap_above_the_platform_maximum_is_refused_and_audited(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    maximum = world.platform.control.max_epsilon_cap
    po = Officer(app_client, world, "po-eu")
    for value in (str(maximum * 2), "1000", "1e308"):
        status, text = po.set_cap(value)
        assert status == 422 and "above the platform's maximum epsilon cap" in text, value
    assert cap(world) == 10.0 and pending(world) == []
    assert [r["requested_cap"] for r in records(world, CAP_REFUSED)] == [maximum * 2, 1000, 1e308]
    with pytest.raises(CapAboveMaximumError, match="field '--epsilon'"):
        world.platform.create_tenant(
            "greedy", region=Region.EU, sharing=SharingPolicy.SOLO, actor="t", epsilon_cap=1e308
        )
    refused = world.platform.plane(Region.EU).ledger.records(action=CAP_REFUSED, limit=None)
    assert refused[-1].subject == "tenant:greedy"


@sqlite_only
def test_the_maximum_also_holds_when_the_approval_comes(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    """A raise requested under a higher maximum is refused once the maximum is lowered."""
    Officer(app_client, world, "to-shop").set_cap("18")
    [request_id] = pending(world)
    world.platform.control.max_epsilon_cap = 16.0
    status, text = Officer(app_client, world, "po-eu").decide(request_id, "approve")
    assert status == 422 and "above the platform's maximum epsilon cap 16" in text
    assert cap(world) == 10.0


def test_stale_forms_are_refused_and_audited(world: AuditWorld, app_client: ClientFactory) -> None:
    tenant_officer, po = Officer(app_client, world, "to-shop"), Officer(app_client, world, "po-eu")
    tenant_officer.set_cap("15")
    [request_id] = pending(world)
    status, text = po.set_cap("5", expected="12")  # a form loaded before another change
    assert status == 409 and "the cap changed since the form was loaded" in text
    po.set_cap("8")  # the cap changes after the raise was requested
    status, text = Officer(app_client, world, "po-all").decide(request_id, "approve")
    assert status == 409 and "must be requested again" in text and cap(world) == 8.0
    tenant_officer.set_cap("14", expected="8.0")
    [newer] = pending(world)
    assert po.decide(newer, "approve")[0] == 303
    status, text = Officer(app_client, world, "po-all").decide(newer, "approve")
    assert status == 409 and "is already approved by po-eu" in text
    refusals = [r["reason"] for r in records(world, CAP_REFUSED)]
    assert len(refusals) == 3 and cap(world) == 14.0


@sqlite_only
def test_a_raise_can_be_rejected_with_a_reason(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    Officer(app_client, world, "to-shop").set_cap("15")
    [request_id] = pending(world)
    po = Officer(app_client, world, "po-eu")
    status, text = po.decide(request_id, "reject")
    assert status == 422 and "field 'reason'" in text
    status, _ = po.decide(request_id, "reject", "the cohort does not justify it")
    assert status == 303 and cap(world) == 10.0 and pending(world) == []
    [rejected] = records(world, RAISE_REJECTED)
    assert rejected["rejected_by"] == "po-eu" and rejected["requested_by"] == "to-shop"
    for bad in ("../x", "0123456789abcdef"):
        status, _ = po.decide(bad, "approve")
        assert status in (404, 422)


def test_an_approval_that_fails_to_commit_leaves_nothing(
    world: AuditWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, access = world.platform, Access(world.platform, Region.EU)
    request = set_cap(
        platform, access, officer(world, "to-shop"), "shop", "15", reason=REASON, expected_cap=10.0
    )
    assert isinstance(request, CapRaiseRequest)
    ledger = platform.plane(Region.EU).ledger
    original = ledger.append

    def commit_fails(**kwargs: Any) -> Any:
        record = original(**kwargs)
        if kwargs.get("session") is not None:

            def boom(_session: object) -> None:
                raise RuntimeError("commit failed")

            event.listen(kwargs["session"], "before_commit", boom, once=True)
        return record

    monkeypatch.setattr(ledger, "append", commit_fails)
    with pytest.raises(RuntimeError, match="commit failed"):
        approve_raise(platform, access, officer(world, "po-eu"), request.id)
    assert cap(world) == 10.0 and pending(world) == [request.id]
    assert records(world, CAP_CHANGED) == [] and ledger.verify().ok


def test_the_command_line(
    cli_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = cli(
        capsys, "tenants", "create", "--id", "big", "--region", "eu", "--sharing", "solo",
        "--epsilon", "1e308",
    )  # fmt: skip
    assert code == 1 and "above the platform's maximum epsilon cap 20" in err
    cli(capsys, "tenants", "create", "--id", "shop", "--region", "eu", "--sharing", "solo")
    platform = Platform()
    officers = Officers(platform.control.engine)
    passwords = {
        o: officers.create(o, role=OfficerRole.PLATFORM, regions=[Region.EU]).password
        for o in ("po-a", "po-b")
    }
    raise_ = ("--tenant", "shop", "--epsilon", "12", "--reason", REASON)
    code, _, err = cli(capsys, "privacy", "set-cap", *raise_)
    assert code == 1 and "is a request" in err
    monkeypatch.setenv("ATLASREC_OFFICER_PASSWORD", "wrong")
    code, _, err = cli(capsys, "privacy", "request-raise", *raise_, "--officer", "po-a")
    assert code == 1 and "wrong password" in err
    monkeypatch.setenv("ATLASREC_OFFICER_PASSWORD", passwords["po-a"])
    code, out, _ = cli(capsys, "privacy", "request-raise", *raise_, "--officer", "po-a")
    assert code == 0 and "10 -> 12 requested" in out
    [request] = CapRequests(platform.control.engine).of_tenant("shop")
    decide = ("--request", request.id)
    code, _, err = cli(capsys, "privacy", "decide-raise", *decide, "--officer", "po-a")
    assert code == 1 and "another platform officer must decide it" in err
    monkeypatch.setenv("ATLASREC_OFFICER_PASSWORD", passwords["po-b"])
    code, out, _ = cli(capsys, "privacy", "decide-raise", *decide, "--officer", "po-b")
    assert code == 0 and "epsilon cap 10 -> 12" in out
    code, out, _ = cli(capsys, "privacy", "raise-requests", "--tenant", "shop", "--json")
    assert code == 0 and json.loads(out)[0]["decided_by"] == "po-b"
    assert platform.control.get_tenant("shop").epsilon_cap == 12.0
    with pytest.raises(InvalidInputError):
        platform.control.create_tenant("x", region=Region.EU, sharing=SharingPolicy.SOLO,
                                       epsilon_cap=float("nan"))  # fmt: skip
    platform.close()


@sqlite_only
def test_a_pending_raise_is_in_the_alerts_inbox_until_decided(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    def raise_alerts() -> list[str]:
        tenant = world.platform.control.get_tenant("shop")
        alone = [a for a in tenant_alerts(world.platform, tenant) if a.kind == RAISE_REQUEST]
        region = region_alerts(world.platform, Region.EU, [tenant])
        assert [a for a in region if a.kind == RAISE_REQUEST] == alone
        return [a.message for a in alone]

    assert raise_alerts() == []
    Officer(app_client, world, "to-shop").set_cap("15")
    [message] = raise_alerts()
    assert "10 -> 15 requested by to-shop" in message
    po = Officer(app_client, world, "po-eu")
    assert "requested by to-shop" in html.unescape(po.client.get("/audit/alerts").text)
    [request_id] = pending(world)
    po.decide(request_id, "approve")
    assert raise_alerts() == []
