"""`atlasrec monitor status`: one view of a region's tenants: freshness and budget flags."""

from __future__ import annotations

from typing import Any

from atlasrec.dataplane.dp_runs import DpRunTable, budget_state
from atlasrec.freshness import region_freshness
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope

BUDGET_LOW = 0.1
"""A tenant with less than this share of its epsilon cap left is flagged `budget_low`."""


def monitor_status(platform: Platform, region: Region, *, actor: str) -> dict[str, Any]:
    """Every tenant of `region`: freshness against its SLOs, DP budget, and its flags."""
    plane = platform.plane(region)
    tenants = []
    for freshness in region_freshness(platform, region):
        tenant = platform.control.get_tenant(freshness.tenant_id)
        scope = Scope(tenant.id, region)
        with plane.session(scope, actor=actor, action="monitor.status") as session:
            runs = DpRunTable(session, plane.ledger).runs()
        state = budget_state(runs, cap=tenant.epsilon_cap, delta=tenant.delta)
        flags = [f"{signal}_stale" for signal in freshness.breached]
        if state.remaining <= 0:
            flags.append("budget_exhausted")
        elif state.remaining < BUDGET_LOW * tenant.epsilon_cap:
            flags.append("budget_low")
        budget = {"cap": tenant.epsilon_cap, "spent": state.spent, "remaining": state.remaining}
        tenants.append({**freshness.as_json(), "budget": budget, "flags": flags})
    lags = {name: lag.total for name, lag in plane.events.lags().items()}
    return {"region": region.value, "consumers": lags, "tenants": tenants}
