"""A tenant's compliance report: printable page, JSON and CSV."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from audit.reports import report_csv, tenant_report
from audit.ui.deps import SignedIn, SignedInDep
from audit.ui.pages import AuditRoute, download, render
from audit.ui.peers import gather_refusals
from audit.ui.templating import report_chart

router = APIRouter(prefix="/tenants", tags=["audit: reports"], route_class=AuditRoute)


def report_for(
    who: SignedIn,
    tenant_id: str,
    *,
    action: str = "audit.export",
    verify: bool = True,
    cross_region: bool = True,
) -> dict[str, Any]:
    """The tenant's report as `who` may see it (the access check audits a refusal).

    With `cross_region`, the other regions' ledgers are asked for refusals involving the
    tenant (`audit.ui.peers.gather_refusals`).
    """
    context = who.context
    tenant = context.access.tenant(who.principal, tenant_id, action=action)
    return tenant_report(
        context.platform,
        tenant,
        actor=who.principal.actor,
        redact_others=who.principal.tenant_id is not None,
        verify=verify,
        other_ledgers=gather_refusals(who, tenant.id) if cross_region else (),
    )


@router.get("/{tenant_id}/report", response_class=HTMLResponse)
def report_html(request: Request, who: SignedInDep, tenant_id: str) -> HTMLResponse:
    """The printable compliance report."""
    report = report_for(who, tenant_id)
    return render(request, "report.html", who=who, r=report, chart=report_chart(report))


@router.get("/{tenant_id}/report.json")
def report_json(who: SignedInDep, tenant_id: str) -> Response:
    """The compliance report as JSON."""
    report = report_for(who, tenant_id)
    name = f"atlasrec-{report['tenant_id']}-{report['region']}-compliance.json"
    return download(json.dumps(report, indent=2, default=str), "application/json", name)


@router.get("/{tenant_id}/report.csv")
def report_csv_route(who: SignedInDep, tenant_id: str) -> Response:
    """The compliance report as CSV."""
    report = report_for(who, tenant_id)
    name = f"atlasrec-{report['tenant_id']}-{report['region']}-compliance.csv"
    return download(report_csv(report), "text/csv; charset=utf-8", name)
