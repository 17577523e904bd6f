"""The platform-wide view: every tenant of every region the platform officer may see.

Each region's figures come from its own audit API (`/audit/api/v1/summary`), asked in
parallel at page-build time with a short timeout; this region's through the same function
in-process. A region that does not answer is shown with the reason; records stay in their
regions.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from atlasrec.tenancy import Region
from audit.ui.deps import SignedInDep
from audit.ui.pages import AuditRoute, render
from audit.ui.peers import PeerReply, ask_regions
from audit.ui.routes.peer_api import summary_for

router = APIRouter(tags=["audit: platform"], route_class=AuditRoute)


@router.get("/platform", response_class=HTMLResponse)
def platform_view(request: Request, who: SignedInDep) -> HTMLResponse:
    """One table per authorised region: its tenants' budgets, or why it did not answer."""
    context = who.context
    context.access.region_wide(who.principal, action="audit.platform")
    regions = sorted(who.principal.regions, key=lambda r: (r != context.region, r.value))
    replies = ask_regions(
        who, regions, "/summary", local=lambda: summary_for(context, who.principal)
    )
    endpoints = context.platform.control.region_endpoints()
    sections = [_section(reply, endpoints.get(reply.region), context.region) for reply in replies]
    return render(request, "platform.html", who=who, sections=sections)


NUMBERS = ("epsilon_cap", "epsilon_spent", "epsilon_remaining", "used_pct", "runs", "rounds")


def _well_formed(body: dict[str, Any]) -> bool:
    """Whether a summary has what the page shows (a peer of another version may not)."""
    tenants, totals = body.get("tenants"), body.get("totals")
    return (
        isinstance(tenants, list)
        and isinstance(totals, dict)
        and all(
            isinstance(t, dict)
            and isinstance(t.get("tenant_id"), str)
            and isinstance(t.get("flags"), list)
            and all(isinstance(t.get(k), int | float) for k in NUMBERS)
            for t in tenants
        )
    )


def _section(reply: PeerReply, endpoint: str | None, own: Region) -> dict[str, Any]:
    """A region's part of the page: its summary and where its tenant pages are."""
    base = "" if reply.region == own else endpoint
    body, reason = reply.body or {}, reply.reason
    if reply.body is not None and not _well_formed(reply.body):
        body, reason = {}, "answered with a malformed summary"
    return {
        "region": reply.region.value,
        "own": reply.region == own,
        "endpoint": endpoint,
        "answered": reason is None,
        "reason": reason,
        "tenants": body.get("tenants", []),
        "totals": body.get("totals", {}),
        "link": None if base is None else f"{base}/audit/tenants/",
    }
