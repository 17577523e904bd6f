"""The region's audit log: search the ledger, with the hash chain's status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session, col, or_, select
from sqlmodel.sql.expression import SelectOfScalar

from atlasrec.dataplane.tables import AuditRecord
from audit.ui.deps import SignedInDep
from audit.ui.pages import AuditRoute, render

router = APIRouter(prefix="/log", tags=["audit: log"], route_class=AuditRoute)

LOG_LIMIT_MAX = 1000


@router.get("", response_class=HTMLResponse)
def audit_log(
    request: Request,
    who: SignedInDep,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9._-]*$")] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=LOG_LIMIT_MAX)] = 100,
) -> HTMLResponse:
    """Search the region's ledger (what the officer may read), with the chain's status."""
    context = who.context
    tenant = tenant or None
    tenants = context.access.log_tenants(who.principal, tenant, action="audit.log")
    query = _search(tenants, action, q, before, limit)
    plane = context.platform.plane(context.region)
    with Session(plane.engine) as session:
        records = list(session.execute(query).scalars().all())
    verification = plane.ledger.verify()
    return render(
        request,
        "log.html",
        who=who,
        records=records,
        verification=verification,
        summary=verification.describe(context.region),
        filters={"tenant": tenant or "", "action": action or "", "q": q or "", "limit": limit},
        next_before=records[-1].seq if len(records) == limit else None,
        tenants=context.access.visible_tenants(who.principal),
    )


def _search(
    tenants: set[str] | None, action: str | None, q: str | None, before: int | None, limit: int
) -> SelectOfScalar[AuditRecord]:
    """The ledger query: newest first, within `tenants` (None: all), filtered."""
    query = select(AuditRecord).order_by(col(AuditRecord.seq).desc()).limit(limit)
    if tenants is not None:
        query = query.where(col(AuditRecord.tenant_id).in_(sorted(tenants)))
    if action:
        query = query.where(col(AuditRecord.action).startswith(action, autoescape=True))
    if q:
        query = query.where(
            or_(
                col(AuditRecord.subject).contains(q, autoescape=True),
                col(AuditRecord.details).contains(q, autoescape=True),
                col(AuditRecord.actor).contains(q, autoescape=True),
            )
        )
    if before is not None:
        query = query.where(col(AuditRecord.seq) < before)
    return query
