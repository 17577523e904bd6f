"""The region's audit log: search the ledger, page through it, with the hash chain's status.

The chain is verified on the newest page of a search (a full read of the ledger); older
and newer pages cost only their query and two indexed counts.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from audit.access import may_see_region
from audit.ui.deps import SignedIn, SignedInDep
from audit.ui.details_view import breakable, details_view, subject_view, view
from audit.ui.log_rows import LogRow, log_row
from audit.ui.log_search import (
    PAGE_SIZES,
    LogFilters,
    LogPage,
    search_page,
    search_page_shown,
)
from audit.ui.pages import AuditRoute, render

router = APIRouter(prefix="/log", tags=["audit: log"], route_class=AuditRoute)

LOG_LIMIT_MAX = 1000
SeqQuery = Annotated[int | None, Query(ge=1, le=2**62)]


@router.get("", response_class=HTMLResponse)
def audit_log(
    request: Request,
    who: SignedInDep,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9._-]*$")] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    before: SeqQuery = None,
    after: SeqQuery = None,
    limit: Annotated[int, Query(ge=1, le=LOG_LIMIT_MAX)] = 100,
) -> HTMLResponse:
    """Search the region's ledger (what the officer may read), newest first, in pages."""
    context = who.context
    tenant = tenant or None
    tenants = context.access.log_tenants(who.principal, tenant, action="audit.log")
    viewer = _viewer_tenant(who)
    filters = LogFilters(None if tenants is None else frozenset(tenants), action or None, q or None)
    plane = context.platform.plane(context.region)
    with Session(plane.engine) as session:
        if viewer is not None and filters.q:  # match the text as shown, never hidden ids
            page = search_page_shown(
                session,
                filters,
                lambda r: log_row(r, viewer_tenant=viewer).text(),
                before=before,
                after=after,
                limit=limit,
            )
        else:
            page = search_page(session, filters, before=before, after=after, limit=limit)
    first_page = before is None and after is None
    verification = plane.ledger.verify() if first_page else None
    query = {"tenant": tenant or "", "action": action or "", "q": q or "", "limit": limit}
    return render(
        request,
        "log.html",
        who=who,
        rows=[_shown(log_row(r, viewer_tenant=viewer)) for r in page.records],
        page=page,
        verification=verification,
        summary=verification.describe(context.region) if verification else "",
        filters=query,
        page_sizes=sorted({*PAGE_SIZES, limit}),
        links=_links(query, page),
        tenants=context.access.visible_tenants(who.principal),
    )


def _viewer_tenant(who: SignedIn) -> str | None:
    """The tenant whose officer reads the log (others' ids redacted); None: a platform officer."""
    if may_see_region(who.principal, who.context.region):
        return None
    return who.principal.tenant_id


def _shown(row: LogRow) -> dict[str, Any]:
    return {
        "row": row,
        "action": breakable(row.action, "._"),
        "actor": breakable(row.actor, ":"),
        "subject": subject_view(row.subject),
        "details": details_view(row.details, row.action),
        "hash": view(row.hash),
    }


def _links(query: dict[str, Any], page: LogPage) -> dict[str, str | None]:
    """Newest, newer and older pages of the same search."""

    def href(**bound: int) -> str:
        kept = {k: v for k, v in query.items() if v != ""}
        return "/audit/log?" + urlencode({**kept, **bound})

    records = page.records
    return {
        "newest": href() if page.newer else None,
        "newer": href(after=records[0].seq) if page.newer and records else None,
        "older": href(before=records[-1].seq) if page.has_older and records else None,
    }
