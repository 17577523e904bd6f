"""The alerts inbox: what needs attention in the tenants the officer may see here."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from audit.alerts import (
    BASELINE_HOURS,
    BUDGET_WARNING_SHARE,
    CRITICAL,
    SPIKE_FACTOR,
    SPIKE_MIN_ATTEMPTS,
)
from audit.ui.deps import SignedInDep
from audit.ui.pages import AuditRoute, render

router = APIRouter(prefix="/alerts", tags=["audit: alerts"], route_class=AuditRoute)
RULES = {
    "budget_share": BUDGET_WARNING_SHARE,
    "spike_min": SPIKE_MIN_ATTEMPTS,
    "spike_factor": SPIKE_FACTOR,
    "baseline_hours": BASELINE_HOURS,
}


@router.get("", response_class=HTMLResponse)
def alerts(request: Request, who: SignedInDep) -> HTMLResponse:
    """Every visible tenant's alerts: critical first, then the newest first."""
    visible = who.context.access.visible_tenants(who.principal)
    found = who.alerts
    critical = sum(1 for a in found if a.severity == CRITICAL)
    return render(
        request,
        "alerts.html",
        who=who,
        alerts=found,
        critical=critical,
        tenants=len(visible),
        rules=RULES,
    )
