"""The privacy officer's audit UI: server-rendered pages under `/audit` of a regional app.

Every page needs a signed-in officer (`SignedInDep`), and every tenant, region-wide or
lineage read goes through `audit.access.Access` first: the one place that allows or
refuses (and audits the refusal). Errors are pages with the status and a one-line reason
naming the field at fault; never a 500 for bad input.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from sqlmodel import Session, col, or_, select

from atlasrec.control.officers import Officers, fingerprint
from atlasrec.dataplane.dp_runs import DpRunTable
from atlasrec.dataplane.tables import AuditRecord
from atlasrec.errors import (
    AtlasRecError,
    BoundaryViolation,
    InvalidInputError,
    UnknownTenantError,
)
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope
from audit.access import Access, AccessRefusedError, Principal
from audit.caps import CapConflictError, change_epsilon_cap
from audit.lineage import (
    UnknownRequestError,
    find_request,
    request_lineage,
    validate_request_id,
)
from audit.reports import report_csv, tenant_report
from audit.ui.sessions import (
    SESSION_COOKIE,
    SESSION_TTL_S,
    SIGNIN_COOKIE,
    SIGNIN_TTL_S,
    SessionData,
    Signer,
    SignInLimiter,
    new_session,
    read_session,
)
from audit.ui.templating import report_chart, templates

HERE = Path(__file__).parent
STATIC = {"audit.css": ("text/css", (HERE / "static" / "audit.css").read_bytes())}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_NEXT = re.compile(r"^/audit/[A-Za-z0-9/_.?=&%-]*$")
LOG_LIMIT_MAX = 1000


class SignInRequiredError(Exception):
    """No valid session: the page redirects to the sign-in form."""


@dataclass
class AuditUi:
    """The audit UI's state within one regional app."""

    platform: Platform
    region: Region
    access: Access
    officers: Officers
    signer: Signer
    limiter: SignInLimiter


_state_lock = threading.Lock()


def ui_of(request: Request) -> AuditUi:
    """The app's audit UI state, created on first use from its serving state."""
    state = request.app.state
    ui: AuditUi | None = getattr(state, "audit_ui", None)
    if ui is None:
        with _state_lock:
            ui = getattr(state, "audit_ui", None)
            if ui is None:
                platform: Platform = state.serving.platform
                region: Region = state.serving.region
                ui = AuditUi(
                    platform,
                    region,
                    Access(platform, region),
                    Officers(platform.control.engine),
                    Signer.for_region(platform.secret, region.value),
                    SignInLimiter(),
                )
                state.audit_ui = ui
    return ui


@dataclass(frozen=True)
class SignedIn:
    """The signed-in officer of a request."""

    ui: AuditUi
    principal: Principal
    name: str
    session: SessionData

    @property
    def csrf(self) -> str:
        """The CSRF token of this session's forms."""
        return self.ui.signer.token("session", self.session.session_id)

    def check_csrf(self, token: str) -> None:
        """Refuse a form without this session's token."""
        if not self.ui.signer.check_token("session", self.session.session_id, token):
            raise HTTPException(403, "field 'csrf_token': missing or invalid (reload the page)")


def signed_in(request: Request) -> SignedIn:
    """The officer of the session cookie (still active, same password, authority here)."""
    ui = ui_of(request)
    session = read_session(ui.signer, request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequiredError
    officer = ui.officers.get(session.officer_id)
    if officer is None or officer.disabled_at is not None:
        raise SignInRequiredError
    if fingerprint(officer) != session.fingerprint:
        raise SignInRequiredError
    principal = Principal.of(officer)
    if not ui.access.can_sign_in(principal):
        raise SignInRequiredError
    return SignedIn(ui, principal, officer.name, session)


SignedInDep = Annotated[SignedIn, Depends(signed_in)]


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-origin form submission refused")


def render(
    request: Request,
    name: str,
    *,
    status: int = 200,
    who: SignedIn | None = None,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    """A page from `templates/`, with the security headers."""
    ui: AuditUi | None = getattr(request.app.state, "audit_ui", None)
    html = templates.get_template(name).render(
        who=who,
        region=ui.region.value if ui else "",
        **values,
    )
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def _error(request: Request, status: int, message: str) -> HTMLResponse:
    titles = {
        400: "Bad request",
        403: "Refused",
        404: "Not found",
        409: "Conflict",
        422: "Invalid input",
        429: "Too many attempts",
    }
    return render(
        request, "error.html", status=status, title=titles.get(status, "Error"), message=message
    )


def _field_errors(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
        parts.append(f"field {'.'.join(loc) or '?'!r}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid input"


class AuditRoute(APIRoute):
    """Turns errors into pages: sign-in redirect, 403/404/409/422 with a reason."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap the handler: errors become pages."""
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequiredError:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.method != "GET":  # a form of an expired session: start over
                    target = "/audit/tenants"
                response = RedirectResponse(f"/audit/login?next={quote(target, safe='')}", 303)
                response.delete_cookie(SESSION_COOKIE, path="/audit")
                return response
            except RequestValidationError as exc:
                return _error(request, 422, _field_errors(exc))
            except (AccessRefusedError, BoundaryViolation) as exc:
                return _error(request, 403, str(exc))
            except (UnknownTenantError, UnknownRequestError) as exc:
                return _error(request, 404, str(exc))
            except CapConflictError as exc:
                return _error(request, 409, str(exc))
            except AtlasRecError as exc:
                return _error(request, 422, str(exc))
            except HTTPException as exc:
                page = _error(request, exc.status_code, str(exc.detail))
                for key, value in (exc.headers or {}).items():
                    page.headers[key] = value
                return page

        return guarded


router = APIRouter(prefix="/audit", route_class=AuditRoute, include_in_schema=False)


# Sign-in -------------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    if value and _NEXT.fullmatch(value) and not value.startswith("/audit/login"):
        return value
    return "/audit/tenants"


def _login_page(
    request: Request, ui: AuditUi, next_: str, *, status: int = 200, message: str = ""
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    cookie = ui.signer.sign("signin", {"n": nonce}, SIGNIN_TTL_S)
    response = render(
        request,
        "login.html",
        status=status,
        csrf=ui.signer.token("signin", nonce),
        next=_safe_next(next_),
        message=message,
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        cookie,
        max_age=SIGNIN_TTL_S,
        path="/audit/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/", response_class=HTMLResponse)
def home() -> RedirectResponse:
    """The tenants page."""
    return RedirectResponse("/audit/tenants", 303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/audit/tenants") -> HTMLResponse:
    """The sign-in form."""
    return _login_page(request, ui_of(request), next)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    officer_id: Annotated[str, Form(max_length=63)],
    password: Annotated[str, Form(max_length=200)],
    csrf_token: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=500)] = "/audit/tenants",
) -> Response:
    """Check the password, then start a session (and record it in the region's ledger)."""
    ui = ui_of(request)
    _same_origin(request)
    signin = ui.signer.unsign("signin", request.cookies.get(SIGNIN_COOKIE))
    if signin is None or not ui.signer.check_token("signin", str(signin.get("n")), csrf_token):
        return _login_page(
            request,
            ui,
            next,
            status=403,
            message="field 'csrf_token': the sign-in form expired or was not ours; try again",
        )
    key = officer_id.strip().lower()
    wait = ui.limiter.retry_after(key)
    if wait > 0:
        return _login_page(
            request,
            ui,
            next,
            status=429,
            message=f"too many failed attempts for {key!r}: try again in {wait:.0f} s",
        )
    officer = ui.officers.authenticate(key, password)
    if officer is None:
        ui.limiter.failed(key)
        return _login_page(
            request, ui, next, status=401, message="unknown officer or wrong password"
        )
    ui.limiter.succeeded(key)
    principal = Principal.of(officer)
    ui.access.require_sign_in(principal)
    cookie, session = new_session(ui.signer, officer.id, fingerprint(officer))
    ui.platform.plane(ui.region).ledger.append(
        actor=principal.actor,
        action="officer.signed_in",
        subject=f"officer:{officer.id}",
        tenant_id=principal.tenant_id,
        details={"role": principal.role.value, "session": session.session_id[:8]},
    )
    response = RedirectResponse(_safe_next(next), 303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=SESSION_TTL_S,
        path="/audit",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/audit/login")
    return response


@router.post("/logout")
def logout(
    request: Request, who: SignedInDep, csrf_token: Annotated[str, Form(max_length=200)]
) -> Response:
    """End the session."""
    _same_origin(request)
    who.check_csrf(csrf_token)
    response = RedirectResponse("/audit/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/audit")
    return response


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The UI's stylesheet (no other files are served)."""
    if name not in STATIC:
        raise HTTPException(404, f"no static file {name!r}")
    media_type, body = STATIC[name]
    return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


# Tenants -------------------------------------------------------------------------------------


@router.get("/tenants", response_class=HTMLResponse)
def tenants(request: Request, who: SignedInDep) -> HTMLResponse:
    """The tenants of this region the officer may see, with their budgets."""
    ui = who.ui
    rows = []
    plane = ui.platform.plane(ui.region)
    for tenant in ui.access.visible_tenants(who.principal):
        scope = Scope(tenant.id, ui.region)
        with plane.session(scope, actor=who.principal.actor, action="audit.tenants") as s:
            table = DpRunTable(s, plane.ledger)
            runs = table.runs()
            state = table.budget(cap=tenant.epsilon_cap, delta=tenant.delta).state()
        rows.append(
            {
                "tenant": tenant,
                "runs": len(runs),
                "rounds": sum(1 for r in runs if r.kind == "federation"),
                "spent": state.spent,
                "remaining": state.remaining,
                "exhausted": state.exhausted,
                "used_pct": min(100.0, 100.0 * state.spent / state.cap),
            }
        )
    return render(request, "tenants.html", who=who, rows=rows)


@router.get("/tenants/{tenant_id}", response_class=HTMLResponse)
def tenant_page(request: Request, who: SignedInDep, tenant_id: str) -> HTMLResponse:
    """A tenant's DP budget over time, remaining budget, federation, and the cap form."""
    report = _report(who, tenant_id, action="audit.tenant", verify=False)
    chart = report_chart(report)
    changed = request.query_params.get("changed") == "1"
    return render(request, "tenant.html", who=who, r=report, chart=chart, changed=changed)


@router.post("/tenants/{tenant_id}/cap")
def change_cap(
    request: Request,
    who: SignedInDep,
    tenant_id: str,
    cap: Annotated[str, Form(max_length=40)],
    reason: Annotated[str, Form(max_length=4000)],
    csrf_token: Annotated[str, Form(max_length=200)],
    expected_cap: Annotated[str | None, Form(max_length=40)] = None,
) -> Response:
    """Raise or lower the tenant's cap with a written reason (a ledger record)."""
    _same_origin(request)
    who.check_csrf(csrf_token)
    tenant = who.ui.access.tenant(who.principal, tenant_id, action="budget.cap_change")
    expected = None
    if expected_cap:
        try:
            expected = float(expected_cap)
        except ValueError:
            expected = math.nan
        if not math.isfinite(expected):
            raise InvalidInputError("field 'expected_cap': not a number")
    change_epsilon_cap(
        who.ui.platform,
        tenant.id,
        cap,  # type: ignore[arg-type]  # parsed (and refused with the field) by parse_cap
        reason=reason,
        actor=who.principal.actor,
        expected_cap=expected,
    )
    return RedirectResponse(f"/audit/tenants/{quote(tenant.id)}?changed=1", 303)


@router.get("/tenants/{tenant_id}/residency", response_class=HTMLResponse)
def residency(request: Request, who: SignedInDep, tenant_id: str) -> HTMLResponse:
    """Artifacts and the regions they are attributed to; refused crossing attempts."""
    report = _report(who, tenant_id, action="audit.residency", verify=False)
    return render(request, "residency.html", who=who, r=report)


def _report(
    who: SignedIn, tenant_id: str, *, action: str = "audit.export", verify: bool = True
) -> dict[str, Any]:
    """The tenant's report as `who` may see it (the access check audits a refusal)."""
    tenant = who.ui.access.tenant(who.principal, tenant_id, action=action)
    return tenant_report(
        who.ui.platform,
        tenant,
        actor=who.principal.actor,
        redact_others=who.principal.tenant_id is not None,
        verify=verify,
    )


@router.get("/tenants/{tenant_id}/report", response_class=HTMLResponse)
def report_html(request: Request, who: SignedInDep, tenant_id: str) -> HTMLResponse:
    """The printable compliance report."""
    report = _report(who, tenant_id)
    return render(request, "report.html", who=who, r=report, chart=report_chart(report))


def _download(body: str, media_type: str, filename: str) -> Response:
    return Response(
        body,
        media_type=media_type,
        headers={
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


@router.get("/tenants/{tenant_id}/report.json")
def report_json(who: SignedInDep, tenant_id: str) -> Response:
    """The compliance report as JSON."""
    report = _report(who, tenant_id)
    name = f"atlasrec-{report['tenant_id']}-{report['region']}-compliance.json"
    return _download(json.dumps(report, indent=2, default=str), "application/json", name)


@router.get("/tenants/{tenant_id}/report.csv")
def report_csv_route(who: SignedInDep, tenant_id: str) -> Response:
    """The compliance report as CSV."""
    report = _report(who, tenant_id)
    name = f"atlasrec-{report['tenant_id']}-{report['region']}-compliance.csv"
    return _download(report_csv(report), "text/csv; charset=utf-8", name)


# Audit log and lineage ---------------------------------------------------------------------------


@router.get("/log", response_class=HTMLResponse)
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
    ui = who.ui
    tenant = tenant or None
    tenants = ui.access.log_tenants(who.principal, tenant, action="audit.log")
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
    plane = ui.platform.plane(ui.region)
    with Session(plane.engine) as session:
        records = list(session.execute(query).scalars().all())
    verification = plane.ledger.verify()
    return render(
        request,
        "log.html",
        who=who,
        records=records,
        verification=verification,
        summary=verification.describe(ui.region),
        filters={"tenant": tenant or "", "action": action or "", "q": q or "", "limit": limit},
        next_before=records[-1].seq if len(records) == limit else None,
        tenants=ui.access.visible_tenants(who.principal),
    )


@router.get("/lineage", response_class=HTMLResponse)
def lineage(
    request: Request,
    who: SignedInDep,
    request_id: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """The chain behind a served request: model, DP run, data snapshot, backbone, rounds."""
    if not request_id:
        return render(request, "lineage.html", who=who, chain=None, request_id="")
    validate_request_id(request_id)
    ui = who.ui
    scope, row = find_request(
        ui.platform, request_id, regions=[ui.region], actor=who.principal.actor
    )
    ui.access.tenant(who.principal, scope.tenant_id, action="audit.lineage")
    chain = request_lineage(ui.platform, scope, row, actor=who.principal.actor)
    return render(request, "lineage.html", who=who, chain=chain, request_id=request_id)
