"""The regional audit API that peer regions' UIs call: JSON, aggregates and refusal records.

`GET /audit/api/v1/summary`: the region's tenants the officer may see, in aggregate.
`GET /audit/api/v1/refusals?tenant=T`: this region's ledger's boundary refusals involving
tenant T (newest first, at most `MAX_REFUSALS`; other tenants' ids redacted for a tenant
officer). Records are read in place per request; the caller stores nothing.

A call carries a peer token minted by the calling region for its signed-in officer
(`audit.ui.peer_tokens`). The officer is reloaded here (disabled, or a changed password:
refused) and `audit.access.Access` applies the same rules as the pages; every refusal is
written to this region's ledger. Errors are JSON `{"detail": one line}`: 401 for a
credential that proves no officer, 403 for an officer without authority.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from atlasrec.control.officers import fingerprint
from atlasrec.http_errors import HANDLED, http_error_of
from audit.access import CredentialRefusedError, Principal
from audit.ledger_answers import MAX_REFUSALS, newest
from audit.region_summary import region_summary
from audit.reports import boundary_refusals
from audit.ui.deps import AuditUiContext, ContextDep
from audit.ui.peer_tokens import PeerTokenError, peer_signer, verify

SUMMARY, REFUSALS = "audit.api.summary", "audit.api.refusals"
JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class PeerApiRoute(APIRoute):
    """Turns errors into JSON with a one-line reason (401 for a refused credential)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap the handler: errors become JSON."""
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except HANDLED as exc:
                error = http_error_of(exc)
                unauthenticated = isinstance(exc, CredentialRefusedError)
                return JSONResponse(
                    {"detail": error.message},
                    status_code=401 if unauthenticated else error.status,
                    headers={
                        **JSON_HEADERS,
                        **({"WWW-Authenticate": "Bearer"} if unauthenticated else {}),
                    },
                )

        return guarded


router = APIRouter(prefix="/api/v1", tags=["audit: peer API"], route_class=PeerApiRoute)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def peer_officer(action: str) -> Callable[[Request, AuditUiContext], Principal]:
    """A dependency: the officer a request's peer token proves (refusals audited here)."""

    def officer_of(request: Request, context: ContextDep) -> Principal:
        access = context.access
        try:
            claims = verify(peer_signer(context.platform.secret), _bearer(request), context.region)
        except PeerTokenError as exc:
            access.refuse_credential(exc.claimed, action, str(exc))
            raise AssertionError("unreachable") from exc
        officer = context.officers.get(claims.officer_id)
        if officer is None:
            access.refuse_credential(claims.officer_id, action, "peer token names no officer")
            raise AssertionError("unreachable")
        principal = Principal.of(officer)
        if officer.disabled_at is not None:
            access.refuse(principal, action, f"officer {officer.id!r} is disabled")
        if fingerprint(officer) != claims.fingerprint:
            access.refuse_credential(
                officer.id, action, "peer token predates the officer's password change"
            )
        return principal

    return officer_of


def summary_for(context: AuditUiContext, principal: Principal) -> dict[str, Any]:
    """The region's summary as `principal` may see it (a refusal is audited)."""
    context.access.require_sign_in(principal, action=SUMMARY)
    tenants = context.access.visible_tenants(principal)
    return region_summary(context.platform, context.region, tenants, actor=principal.actor)


@router.get("/summary")
def summary(
    context: ContextDep, principal: Annotated[Principal, Depends(peer_officer(SUMMARY))]
) -> JSONResponse:
    """The region's tenants the officer may see: budgets, runs, recent refusals, flags."""
    return JSONResponse(summary_for(context, principal), headers=JSON_HEADERS)


@router.get("/refusals")
def refusals(
    context: ContextDep,
    principal: Annotated[Principal, Depends(peer_officer(REFUSALS))],
    tenant: Annotated[str, Query(min_length=1, max_length=63)],
) -> JSONResponse:
    """The region's boundary refusals involving `tenant`, newest first (bounded)."""
    context.access.tenant_records(principal, tenant, action=REFUSALS)
    ledger = context.platform.plane(context.region).ledger
    rows = boundary_refusals(ledger, tenant, redact_others=principal.tenant_id is not None)
    kept, truncated = newest(rows)
    body = {
        "region": context.region.value,
        "tenant_id": tenant,
        "refusals": kept,
        "truncated": truncated,
        "limit": MAX_REFUSALS,
    }
    return JSONResponse(body, headers=JSON_HEADERS)
