"""A region's tenants in aggregate: budgets, charged runs, recent refusals and flags.

What a peer region's platform view reads through the audit API (`GET /audit/api/v1/summary`):
aggregates only, never a ledger record or user data. Budgets are composed by the same
ledger functions as the tenant pages (`atlasrec.dataplane.dp_runs.budget_state`); each
tenant's flags add the kinds of its alerts (`audit.alerts`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from atlasrec.boundary import REFUSED as BOUNDARY_REFUSED
from atlasrec.control.tables import Tenant
from atlasrec.dataplane.audit_tenants import record_tenants
from atlasrec.dataplane.dp_runs import DpRunTable, budget_state
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope
from audit.alerts import BUDGET_WARNING_SHARE, region_alerts

NEAR_CAP_PCT = 100.0 * BUDGET_WARNING_SHARE  # the budget alert's threshold
RECENT = timedelta(hours=24)
NEAR_CAP, EXHAUSTED = "budget_near_cap", "budget_exhausted"


def region_summary(
    platform: Platform,
    region: Region,
    tenants: Sequence[Tenant],
    *,
    actor: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The summary of `tenants` (homed in `region`), and the region's totals."""
    now = now or datetime.now(UTC)
    recent = _recent_refusals(platform, region, now - RECENT)
    kinds: dict[str, list[str]] = {}
    for alert in region_alerts(platform, region, tenants, now=now):
        kinds.setdefault(alert.tenant_id, []).append(alert.kind)
    rows = [
        _tenant_row(platform, region, t, recent[t.id], kinds.get(t.id, []), actor=actor)
        for t in tenants
    ]
    return {
        "region": region.value,
        "generated_at": now.isoformat(timespec="seconds"),
        "tenants": rows,
        "totals": {
            "tenants": len(rows),
            "runs": sum(r["runs"] for r in rows),
            "rounds": sum(r["rounds"] for r in rows),
            "near_cap": sum(1 for r in rows if NEAR_CAP in r["flags"]),
            "exhausted": sum(1 for r in rows if r["exhausted"]),
            "refusals_24h": sum(r["refusals_24h"] for r in rows),
        },
    }


def _recent_refusals(platform: Platform, region: Region, since: datetime) -> Counter[str]:
    """Boundary refusals recorded in the region since `since`, per tenant involved.

    Only the records from `since` on are read (the ledger is in time order).
    """
    ledger = platform.plane(region).ledger
    first = ledger.first_seq_at(since.isoformat(timespec="microseconds"))
    counts: Counter[str] = Counter()
    for record in ledger.records(action=BOUNDARY_REFUSED, after_seq=first - 1, limit=None):
        counts.update(record_tenants(record))
    return counts


def tenant_budget(
    platform: Platform, region: Region, tenant: Tenant, *, actor: str
) -> dict[str, Any]:
    """A tenant's budget in aggregate: charged runs and rounds, spent, remaining, used %."""
    plane = platform.plane(region)
    with plane.session(Scope(tenant.id, region), actor=actor, action="audit.summary") as s:
        runs = DpRunTable(s, plane.ledger).runs()
    state = budget_state(runs, cap=tenant.epsilon_cap, delta=tenant.delta)
    return {
        "epsilon_cap": tenant.epsilon_cap,
        "epsilon_spent": state.spent,
        "epsilon_remaining": state.remaining,
        "used_pct": min(100.0, 100.0 * state.spent / state.cap),
        "exhausted": state.exhausted,
        "runs": len(runs),
        "rounds": sum(1 for r in runs if r.kind == "federation"),
    }


def _tenant_row(
    platform: Platform,
    region: Region,
    tenant: Tenant,
    refusals: int,
    alerts: list[str],
    *,
    actor: str,
) -> dict[str, Any]:
    """A tenant's aggregates; its flags: near the cap, exhausted, and its alerts' kinds."""
    budget = tenant_budget(platform, region, tenant, actor=actor)
    flags = [NEAR_CAP] if budget["used_pct"] >= NEAR_CAP_PCT else []
    if budget["exhausted"]:
        flags.append(EXHAUSTED)
    flags += [kind for kind in dict.fromkeys(alerts) if kind not in flags]
    return {
        "tenant_id": tenant.id,
        "name": tenant.name,
        "sharing": tenant.sharing,
        **budget,
        "refusals_24h": refusals,
        "flags": flags,
    }
