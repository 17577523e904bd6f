"""The tenants of the region: their DP budgets, residency, drift, and the cap form."""

from __future__ import annotations

import json
import math
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from atlasrec.drift import drift_history
from atlasrec.errors import InvalidInputError
from atlasrec.experiments import status as experiment_status
from atlasrec.models.bundle import KIND as MODEL_KIND
from atlasrec.outcomes import stored_outcomes
from atlasrec.releases import status as release_status
from atlasrec.tenancy import Scope
from audit.cap_requests import approve_raise, reject_raise, set_cap
from audit.caps import CapChange
from audit.region_summary import tenant_budget
from audit.ui.deps import SignedInDep, check_same_origin
from audit.ui.pages import AuditRoute, render
from audit.ui.routes.reports import report_for
from audit.ui.templating import report_chart

METRIC_DAYS = 30

router = APIRouter(prefix="/tenants", tags=["audit: tenants"], route_class=AuditRoute)
NOTICES = ("changed", "requested", "approved", "rejected")


@router.get("", response_class=HTMLResponse)
def tenants(request: Request, who: SignedInDep) -> HTMLResponse:
    """The tenants of this region the officer may see, with their budgets."""
    context, actor = who.context, who.principal.actor
    rows = [
        {
            "tenant": t,
            **tenant_budget(context.platform, context.region, t, actor=actor),
            "alerts": [a for a in who.alerts if a.tenant_id == t.id],
        }
        for t in context.access.visible_tenants(who.principal)
    ]
    return render(request, "tenants.html", who=who, rows=rows)


@router.get("/{tenant_id}", response_class=HTMLResponse)
def tenant_page(request: Request, who: SignedInDep, tenant_id: str) -> HTMLResponse:
    """A tenant's DP budget over time, remaining budget, federation, and the cap form."""
    report = report_for(who, tenant_id, action="audit.tenant", verify=False, cross_region=False)
    chart = report_chart(report)
    notices = {k: v for k, v in request.query_params.items() if k in NOTICES}
    return render(
        request,
        "tenant.html",
        who=who,
        r=report,
        chart=chart,
        notices=notices,
        max_cap=who.context.platform.control.max_epsilon_cap,
    )


@router.post("/{tenant_id}/cap")
def change_cap(
    request: Request,
    who: SignedInDep,
    tenant_id: str,
    cap: Annotated[str, Form(max_length=40)],
    reason: Annotated[str, Form(max_length=4000)],
    csrf_token: Annotated[str, Form(max_length=200)],
    expected_cap: Annotated[str | None, Form(max_length=40)] = None,
) -> Response:
    """Lower the tenant's cap, or request a raise, with a written reason (ledger records)."""
    check_same_origin(request)
    who.check_csrf(csrf_token)
    done = set_cap(
        who.context.platform,
        who.context.access,
        who.principal,
        tenant_id,
        cap,
        reason=reason,
        expected_cap=_expected_cap(expected_cap),
    )
    outcome = "changed=1" if isinstance(done, CapChange) else f"requested={done.id}"
    return RedirectResponse(f"/audit/tenants/{quote(tenant_id)}?{outcome}", 303)


@router.post("/{tenant_id}/raise-requests/{request_id}")
def decide_raise(
    request: Request,
    who: SignedInDep,
    tenant_id: str,
    request_id: str,
    decision: Annotated[Literal["approve", "reject"], Form()],
    csrf_token: Annotated[str, Form(max_length=200)],
    reason: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    """Approve or reject a pending raise (a platform officer other than the requester)."""
    check_same_origin(request)
    who.check_csrf(csrf_token)
    context = who.context
    if decision == "approve":
        approve_raise(context.platform, context.access, who.principal, request_id)
    else:
        reject_raise(context.platform, context.access, who.principal, request_id, reason=reason)
    return RedirectResponse(f"/audit/tenants/{quote(tenant_id)}?{decision}d={request_id}", 303)


def _expected_cap(value: str | None) -> float | None:
    """The cap the form was showing (None: not given); 422 when not a finite number."""
    if not value:
        return None
    try:
        expected = float(value)
    except ValueError:
        expected = math.nan
    if not math.isfinite(expected):
        raise InvalidInputError("field 'expected_cap': not a number")
    return expected


@router.get("/{tenant_id}/residency", response_class=HTMLResponse)
def residency(request: Request, who: SignedInDep, tenant_id: str) -> HTMLResponse:
    """Artifacts and the regions they are attributed to; refused crossing attempts."""
    report = report_for(who, tenant_id, action="audit.residency", verify=False)
    return render(request, "residency.html", who=who, r=report)


@router.get("/{tenant_id}/drift", response_class=HTMLResponse)
def drift(request: Request, who: SignedInDep, tenant_id: str) -> HTMLResponse:
    """The tenant's recorded drift checks: the last one's signals, and the ones before."""
    tenant = who.context.access.tenant(who.principal, tenant_id, action="audit.drift")
    platform = who.context.platform
    scope = Scope(tenant.id, who.context.region)
    artifacts = platform.plane(scope.region).artifacts
    live = artifacts.latest(scope, MODEL_KIND, actor=who.principal.actor)
    history = drift_history(platform, tenant.id)
    return render(
        request,
        "drift.html",
        who=who,
        tenant=tenant,
        live=live.version if live is not None else None,
        history=history,
    )


@router.get("/{tenant_id}/releases", response_class=HTMLResponse)
def releases(request: Request, who: SignedInDep, tenant_id: str) -> HTMLResponse:
    """The tenant's releases and experiments, each decision with its numbers, online metrics."""
    tenant = who.context.access.tenant(who.principal, tenant_id, action="audit.releases")
    platform, actor = who.context.platform, who.principal.actor
    built = release_status(platform, tenant.id, actor=actor)
    records = platform.plane(who.context.region).ledger.records(
        tenant_id=tenant.id, action="release.", limit=None
    )
    decisions = [
        {"action": r.action, "at": r.ts, "actor": r.actor, "details": json.loads(r.details)}
        for r in reversed(records)
    ]
    metrics = stored_outcomes(platform, tenant.id, actor=actor, days=METRIC_DAYS)
    experiments = experiment_status(platform, tenant.id, actor=actor)["experiments"]
    return render(
        request,
        "releases.html",
        experiments=experiments,
        who=who,
        tenant=tenant,
        s=built,
        decisions=decisions,
        metrics=metrics,
        days=METRIC_DAYS,
    )
