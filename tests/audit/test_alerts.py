"""The alerts inbox: each kind of alert fires exactly when it should, officers see only theirs."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from atlasrec.control.officers import Officers
from atlasrec.dataplane.dp_runs import DpRunTable
from atlasrec.drift import CHECKED, DriftReport
from atlasrec.errors import BoundaryViolation
from atlasrec.evaluation.drift import categorical_drift
from atlasrec.leakage import FEDERATION_STOPPED, HIT, Hit, resume
from atlasrec.platform import Platform
from atlasrec.privacy_audit import AUDITED
from atlasrec.repeated_refusals import RepeatedRefusals
from atlasrec.tenancy import Region, Scope, SharingPolicy
from audit.access import Access, AccessRefusedError, Principal
from audit.alerts import (
    BUDGET,
    CRITICAL,
    DRIFT,
    LEAKAGE,
    PRIVACY_AUDIT,
    REFUSAL_SPIKE,
    WARNING,
    Alert,
    ordered,
    region_alerts,
    tenant_alerts,
)
from audit.caps import change_epsilon_cap
from tests.audit.conftest import ClientFactory
from tests.utils.audit import AuditWorld, sign_in

EU = Region.EU
ALERT_ROW = re.compile(r'data-tenant="([^"]+)" data-kind="([^"]+)" data-severity="([^"]+)"')
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
Clock = Callable[[datetime], None]


class _Frozen(datetime):
    """A `datetime` whose `now` is set by the test (the ledger's clock)."""

    at = datetime.now(UTC)

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return cls.at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Sets the time the region's ledger stamps new records with."""
    monkeypatch.setattr("audit.ledger.datetime", _Frozen)

    def set_to(moment: datetime) -> None:
        _Frozen.at = moment

    return set_to


@pytest.fixture
def t0() -> datetime:
    """A moment after everything the world recorded: records stamped up to it stay in order."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)


def alerts_of(world: AuditWorld, tenant_id: str, now: datetime | None = None) -> dict[str, Alert]:
    tenant = world.platform.control.get_tenant(tenant_id)
    found = tenant_alerts(world.platform, tenant, now=now)
    assert len({a.kind for a in found if a.kind != PRIVACY_AUDIT}) == len(
        [a for a in found if a.kind != PRIVACY_AUDIT]
    )
    return {a.kind: a for a in found}


def spent(platform: Platform, tenant_id: str) -> float:
    plane = platform.plane(EU)
    with plane.session(Scope(tenant_id, EU), actor="test", action="test.spent") as session:
        return DpRunTable(session, plane.ledger).spent()


def lower_cap(platform: Platform, tenant_id: str, cap: float) -> None:
    change_epsilon_cap(platform, tenant_id, cap, reason="testing the alert levels", actor="test")


def refused(platform: Platform, attempts: int, *, tenant: str = "shop", key: str = "k1") -> None:
    """`attempts` refusals of one key, aggregated as serving aggregates them."""
    refusals = RepeatedRefusals(platform.plane(EU).boundary, window_s=3600, sweep=False)
    for _ in range(attempts):
        with suppress(BoundaryViolation):
            refusals.admit(key, Scope(tenant, Region.US), actor=f"key:{key}", action="test.serve")
    refusals.close()


def test_budget_alert_from_80_percent_of_the_cap_critical_when_exhausted(
    world: AuditWorld,
) -> None:
    platform = world.platform
    used = spent(platform, "shop")
    assert BUDGET not in alerts_of(world, "shop")
    lower_cap(platform, "shop", used / 0.79)
    assert BUDGET not in alerts_of(world, "shop")
    lower_cap(platform, "shop", used / 0.80)
    warning = alerts_of(world, "shop")[BUDGET]
    assert warning.severity == WARNING and "(80%)" in warning.message
    assert f"composed total ε {used:.3f}" in warning.message
    assert warning.evidence == "/audit/tenants/shop" and warning.since is not None
    lower_cap(platform, "shop", used)
    critical = alerts_of(world, "shop")[BUDGET]
    assert critical.severity == CRITICAL and "exhausted" in critical.message
    assert critical.since is not None and critical.since >= warning.since
    assert BUDGET not in alerts_of(world, "label")


@sqlite_only
def test_a_refusal_spike_counts_aggregated_repeats(
    world: AuditWorld, clock: Clock, t0: datetime
) -> None:
    clock(t0 - timedelta(hours=20))
    refused(world.platform, 1)  # the baseline: one attempt in the 24 hours before
    clock(t0 - timedelta(minutes=30))
    refused(world.platform, 12)  # two records: the first attempt, and 11 repeats
    records = world.platform.plane(EU).ledger.records(tenant_id="shop", action="boundary.")
    assert [r.details.count('"repeats":11') for r in records[-2:]] == [0, 1]
    spike = alerts_of(world, "shop", now=t0)[REFUSAL_SPIKE]
    assert spike.severity == WARNING
    assert spike.message.startswith("refusal spike: 12 refused attempts in the last hour")
    assert "mean of 0.0 an hour" in spike.message
    assert spike.since == (t0 - timedelta(minutes=30)).isoformat(timespec="seconds")
    assert spike.evidence == "/audit/tenants/shop/residency"
    assert REFUSAL_SPIKE not in alerts_of(world, "shop", now=t0 - timedelta(minutes=31))
    assert REFUSAL_SPIKE not in alerts_of(world, "shop", now=t0 + timedelta(hours=1))
    assert REFUSAL_SPIKE not in alerts_of(world, "label", now=t0)


@sqlite_only
def test_a_steady_rate_of_refusals_is_no_spike(
    world: AuditWorld, clock: Clock, t0: datetime
) -> None:
    for hours in range(25, 1, -1):  # 3 attempts an hour for the 24 hours before the last
        clock(t0 - timedelta(hours=hours, minutes=-5))
        refused(world.platform, 3)
    clock(t0 - timedelta(minutes=40))
    refused(world.platform, 14)
    assert REFUSAL_SPIKE not in alerts_of(world, "shop", now=t0)  # 14 < 5 x 3 an hour
    clock(t0 - timedelta(minutes=20))
    refused(world.platform, 1, key="k2")
    spike = alerts_of(world, "shop", now=t0)[REFUSAL_SPIKE]
    assert "15 refused attempts" in spike.message and "mean of 3.0 an hour" in spike.message


@sqlite_only
def test_too_few_refusals_are_no_spike(world: AuditWorld, clock: Clock, t0: datetime) -> None:
    clock(t0 - timedelta(minutes=10))
    refused(world.platform, 9, tenant="label")
    assert REFUSAL_SPIKE not in alerts_of(world, "label", now=t0)
    refused(world.platform, 1, tenant="label", key="k2")
    assert "10 refused attempts" in alerts_of(world, "label", now=t0)[REFUSAL_SPIKE].message


def record_hit(platform: Platform, hit: Hit) -> None:
    """A finding as the leakage scanner records it, with the federation stop it causes."""
    ledger = platform.plane(EU).ledger
    ledger.append(
        actor="scan",
        action=HIT,
        subject=hit.found_in,
        tenant_id=hit.tenant_id,
        details=asdict(hit),
    )
    ledger.append(
        actor="scan", action=FEDERATION_STOPPED, subject="region:eu", details={"reason": "1"}
    )


def test_leakage_is_critical_until_the_federation_resumes(world: AuditWorld) -> None:
    platform = world.platform
    record_hit(platform, Hit("label", "model:shop/v1", "shop", "c-label-1"))
    shop, label = alerts_of(world, "shop")[LEAKAGE], alerts_of(world, "label")[LEAKAGE]
    assert shop.severity == label.severity == CRITICAL
    assert "1 finding(s) of other tenants' canaries in this tenant's artifacts" in shop.message
    assert "(1 artifact(s) quarantined)" in shop.message
    assert "federation is stopped" in shop.message
    assert "1 finding(s) of this tenant's canaries elsewhere" in label.message
    assert "shop" not in label.message and "label" not in shop.message
    assert shop.evidence == "/audit/log?tenant=shop&action=leakage."
    resume(platform, EU, reason="model v1 quarantined and retrained", actor="officer:po-eu")
    assert LEAKAGE not in alerts_of(world, "shop") and LEAKAGE not in alerts_of(world, "label")
    record_hit(platform, Hit("label", "backbone:eu/bb-v3", None, "c-label-2"))
    assert LEAKAGE in alerts_of(world, "label") and LEAKAGE not in alerts_of(world, "shop")


def record_drift_check(world: AuditWorld, version: str, *, drifted: bool) -> None:
    current = ["a"] * 100 + ["b"] * 200 if drifted else ["a"] * 300
    signal = categorical_drift("category_mix", ["a"] * 300, current)
    checked = datetime.now(UTC).isoformat()
    report = DriftReport("shop", "eu", version, 0.0, checked, [signal.as_json()])
    world.platform.plane(EU).ledger.append(
        actor="test",
        action=CHECKED,
        subject="tenant:shop",
        tenant_id="shop",
        details=report.as_json(),
    )


def test_drift_of_the_live_model_warns(world: AuditWorld) -> None:
    record_drift_check(world, world.model_version, drifted=False)
    assert DRIFT not in alerts_of(world, "shop")
    record_drift_check(world, world.model_version, drifted=True)
    record_drift_check(world, world.model_version, drifted=True)
    drift = alerts_of(world, "shop")[DRIFT]
    assert drift.severity == WARNING and "category_mix" in drift.message
    assert "2 drifted check(s) in a row" in drift.message
    assert drift.evidence == "/audit/tenants/shop/drift"
    record_drift_check(world, world.model_version, drifted=False)
    assert DRIFT not in alerts_of(world, "shop")
    record_drift_check(world, "20200101T000000-old", drifted=True)  # not the live model
    assert DRIFT not in alerts_of(world, "shop")


def record_audit(world: AuditWorld, version: str, *, bound: float, claimed: float = 1.0) -> None:
    details = {
        "model_version": version,
        "claimed_epsilon": claimed,
        "epsilon_lower_bound": bound,
        "auc": 0.9,
        "alarm": bound > claimed,
    }
    world.platform.plane(EU).ledger.append(
        actor="test", action=AUDITED, subject="model", tenant_id="shop", details=details
    )


def test_an_empirical_audit_above_the_claim_is_critical(world: AuditWorld) -> None:
    record_audit(world, "v-old", bound=0.4)
    assert PRIVACY_AUDIT not in alerts_of(world, "shop")
    record_audit(world, world.model_version, bound=1.7)
    alarm = alerts_of(world, "shop")[PRIVACY_AUDIT]
    assert alarm.severity == CRITICAL and world.model_version in alarm.message
    assert "lower bound ε 1.700 is above the claimed ε 1.000" in alarm.message
    record_audit(world, world.model_version, bound=0.5)  # re-audited: within the claim
    assert PRIVACY_AUDIT not in alerts_of(world, "shop")
    assert PRIVACY_AUDIT not in alerts_of(world, "label")


def test_ordering_is_critical_first_then_newest_first() -> None:
    def alert(tenant: str, severity: str, since: str | None) -> Alert:
        return Alert(tenant, BUDGET, severity, "m", since, "/")  # type: ignore[arg-type]

    a = alert("a", WARNING, "2026-01-03T00:00:00+00:00")
    b = alert("b", CRITICAL, "2026-01-01T00:00:00+00:00")
    c = alert("c", CRITICAL, "2026-01-02T00:00:00+00:00")
    d = alert("d", CRITICAL, None)
    e = alert("e", WARNING, None)
    assert ordered([e, a, d, b, c]) == [c, b, d, a, e]


def target_shop(world: AuditWorld, attempts: int) -> None:
    """Refusals about shop by others: label's scope, and the label officer."""
    platform = world.platform
    for _ in range(attempts):
        with suppress(BoundaryViolation):
            platform.plane(EU).boundary.admit(
                Scope("label", EU), actor="t", action="test.read", target_tenant="shop"
            )
    officer = Officers(platform.control.engine).get("to-label")
    assert officer is not None
    with suppress(AccessRefusedError):
        Access(platform, EU).tenant(Principal.of(officer), "shop", action="audit.tenant")


def test_the_page_lists_the_alerts_an_officer_may_see(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    platform = world.platform
    client = app_client(EU)
    assert sign_in(client, "po-eu", world.passwords["po-eu"]).status_code == 303
    clean = client.get("/audit/alerts")
    assert clean.status_code == 200 and 'id="no-alerts"' in clean.text
    assert 'class="count"' not in clean.text

    lower_cap(platform, "shop", spent(platform, "shop"))
    target_shop(world, 9)  # with the seeded one and the officer's: 11 attempts on shop
    record_audit(world, world.model_version, bound=1.7)
    rows = ALERT_ROW.findall(client.get("/audit/alerts").text)
    assert set(rows) == {
        ("shop", BUDGET, CRITICAL),
        ("shop", PRIVACY_AUDIT, CRITICAL),
        ("shop", REFUSAL_SPIKE, WARNING),
        ("label", REFUSAL_SPIKE, WARNING),
    }
    assert [severity for _, _, severity in rows] == [CRITICAL, CRITICAL, WARNING, WARNING]
    page = client.get("/audit/tenants")
    assert '<span class="count" title="alerts">4</span>' in page.text
    assert 'class="badge stop">3 alerts</a>' in page.text
    assert 'class="badge warn">1 warning</a>' in page.text

    client = app_client(EU)
    assert sign_in(client, "to-shop", world.passwords["to-shop"]).status_code == 303
    text = client.get("/audit/alerts").text
    assert {tenant for tenant, _, _ in ALERT_ROW.findall(text)} == {"shop"}
    assert "11 refused attempts" in text
    assert "label" not in text.split("<main>")[1]
    assert '<span class="count" title="alerts">3</span>' in text


@sqlite_only
def test_region_alerts_of_200_tenants_are_fast_and_a_few_queries(platform: Platform) -> None:
    for n in range(200):
        platform.create_tenant(f"t{n:03d}", region=EU, sharing=SharingPolicy.REGIONAL, actor="t")
    tenants = platform.control.list_tenants(EU)
    refused(platform, 12, tenant="t007")

    def queries(of: list[Any]) -> tuple[int, float]:
        statements: list[str] = []

        def count(*args: Any) -> None:
            statements.append(args[2])

        engine = platform.plane(EU).engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            started = time.perf_counter()
            found = region_alerts(platform, EU, of)
            elapsed = time.perf_counter() - started
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert [(a.tenant_id, a.kind) for a in found] == [("t007", REFUSAL_SPIKE)]
        return len(statements), elapsed

    few, _ = queries(tenants[:20])
    many, elapsed = min(queries(tenants) for _ in range(3))
    assert many == few  # a fixed number of queries, whatever the number of tenants
    assert elapsed < 0.25, f"{elapsed:.3f} s for 200 tenants"


def test_a_region_reads_the_same_alerts_as_each_tenant(world: AuditWorld) -> None:
    platform = world.platform
    lower_cap(platform, "shop", spent(platform, "shop") / 0.9)
    target_shop(world, 9)
    record_hit(platform, Hit("label", "model:shop/v1", "shop", "c-label-1"))
    record_drift_check(world, world.model_version, drifted=True)
    record_audit(world, world.model_version, bound=1.7)
    tenants = platform.control.list_tenants(EU)
    each = [a for t in tenants for a in tenant_alerts(platform, t)]
    assert {a.kind for a in each} == {BUDGET, REFUSAL_SPIKE, LEAKAGE, DRIFT, PRIVACY_AUDIT}
    assert region_alerts(platform, EU, tenants) == ordered(each)
    assert region_alerts(platform, Region.US, tenants) == []  # EU's tenants are not homed there
