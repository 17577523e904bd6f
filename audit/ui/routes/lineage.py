"""Lineage: the chain behind a served request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from audit.lineage import find_request, request_lineage, validate_request_id
from audit.ui.deps import SignedInDep
from audit.ui.pages import AuditRoute, render

router = APIRouter(prefix="/lineage", tags=["audit: lineage"], route_class=AuditRoute)


@router.get("", response_class=HTMLResponse)
def lineage(
    request: Request,
    who: SignedInDep,
    request_id: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """The chain behind a served request: model, DP run, data snapshot, backbone, rounds."""
    if not request_id:
        return render(request, "lineage.html", who=who, chain=None, request_id="")
    validate_request_id(request_id)
    context = who.context
    scope, row = find_request(
        context.platform, request_id, regions=[context.region], actor=who.principal.actor
    )
    context.access.tenant(who.principal, scope.tenant_id, action="audit.lineage")
    chain = request_lineage(context.platform, scope, row, actor=who.principal.actor)
    return render(request, "lineage.html", who=who, chain=chain, request_id=request_id)
