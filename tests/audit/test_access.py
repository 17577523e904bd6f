"""The one authorisation point of the audit UI: who may see which tenant, and refusals."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlasrec.control.officers import OfficerRole, Officers
from atlasrec.control.tables import Officer
from atlasrec.errors import UnknownTenantError
from atlasrec.tenancy import Region
from audit.access import REFUSED, Access, AccessRefusedError, Principal, may_see, may_see_region
from tests.utils.audit import OFFICERS, AuditWorld

TENANTS = ["t0", "t1", "t2", "t3", "t4", "t5"]
regions = st.sampled_from(list(Region))
homes = st.fixed_dictionaries({t: st.one_of(st.none(), regions) for t in TENANTS})


@st.composite
def principals(draw: st.DrawFn) -> Principal:
    if draw(st.booleans()):
        return Principal("p", OfficerRole.PLATFORM, frozenset(draw(st.sets(regions))), None)
    return Principal("t", OfficerRole.TENANT, frozenset(), draw(st.sampled_from(TENANTS)))


@given(principal=principals(), homes=homes, app=regions)
def test_who_may_see_which_tenant(
    principal: Principal, homes: dict[str, Region | None], app: Region
) -> None:
    allowed = {t for t in TENANTS if may_see(principal, t, homes[t], app)}
    here = {t for t in TENANTS if homes[t] == app}  # unknown tenants (None) are never here
    if principal.role == OfficerRole.TENANT:
        assert allowed == {principal.tenant_id} & here
        assert not may_see_region(principal, app)
    else:
        assert allowed == (here if app in principal.regions else set())
        assert may_see_region(principal, app) == (app in principal.regions)
    assert allowed <= here  # a regional app never shows another region's tenant


@pytest.mark.parametrize("app", [Region.EU, Region.US])
def test_access_allows_exactly_the_rule_and_audits_every_refusal(
    world: AuditWorld, app: Region
) -> None:
    platform = world.platform
    access = Access(platform, app)
    refused = 0
    for principal in (Principal.of(o) for o in _officers(world)):
        visible = {t.id for t in access.visible_tenants(principal)}
        for tenant in ("shop", "label", "far"):
            home = platform.control.home_region_of(tenant)
            if may_see(principal, tenant, home, app):
                assert access.tenant(principal, tenant, action="t").id == tenant
                assert tenant in visible
            else:
                with pytest.raises(AccessRefusedError):
                    access.tenant(principal, tenant, action="t")
                refused += 1
                assert tenant not in visible
        if may_see_region(principal, app):
            with pytest.raises(UnknownTenantError):
                access.tenant(principal, "ghost", action="t")
        else:
            with pytest.raises(AccessRefusedError):
                access.tenant(principal, "ghost", action="t")
            refused += 1
    records = platform.plane(app).ledger.records(action=REFUSED, limit=None)
    assert len(records) == refused
    assert all(json.loads(r.details)["officer"] in OFFICERS for r in records)


def test_log_scope(world: AuditWorld) -> None:
    access = Access(world.platform, Region.EU)
    officers = {o.id: Principal.of(o) for o in _officers(world)}
    assert access.log_tenants(officers["po-eu"], None, action="t") is None
    assert access.log_tenants(officers["to-shop"], None, action="t") == {"shop"}
    assert access.log_tenants(officers["to-shop"], "shop", action="t") == {"shop"}
    with pytest.raises(AccessRefusedError):
        access.log_tenants(officers["to-shop"], "label", action="t")
    with pytest.raises(AccessRefusedError):
        access.log_tenants(officers["po-us"], None, action="t")
    with pytest.raises(AccessRefusedError):
        access.log_tenants(officers["to-far"], None, action="t")


def _officers(world: AuditWorld) -> list[Officer]:
    return Officers(world.platform.control.engine).list()
