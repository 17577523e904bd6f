"""Signing in and out: the sign-in form, sessions, and the UI's home."""

from __future__ import annotations

import math
import re
import secrets
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from atlasrec.control.officers import fingerprint
from atlasrec.control.signin_throttle import client_of
from atlasrec.control.tables import Officer
from audit.access import Principal
from audit.ui.deps import AuditUiContext, ContextDep, SignedInDep, check_same_origin
from audit.ui.pages import AuditRoute, render
from audit.ui.sessions import (
    DEVICE_COOKIE,
    DEVICE_TTL_S,
    SESSION_COOKIE,
    SESSION_TTL_S,
    SIGNIN_COOKIE,
    SIGNIN_TTL_S,
    device_of,
    new_device,
    new_session,
)

router = APIRouter(tags=["audit: sign-in"], route_class=AuditRoute)

_NEXT = re.compile(r"^/audit/[A-Za-z0-9/_.?=&%-]*$")


def _safe_next(value: str | None) -> str:
    if value and _NEXT.fullmatch(value) and not value.startswith("/audit/login"):
        return value
    return "/audit/tenants"


def _login_page(
    request: Request,
    context: AuditUiContext,
    next_: str,
    *,
    status: int = 200,
    message: str = "",
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    cookie = context.signer.sign("signin", {"n": nonce}, SIGNIN_TTL_S)
    response = render(
        request,
        "login.html",
        status=status,
        csrf=context.signer.token("signin", nonce),
        next=_safe_next(next_),
        message=message,
    )
    _set_cookie(request, response, SIGNIN_COOKIE, cookie, SIGNIN_TTL_S, "/audit/login")
    return response


@router.get("/", response_class=HTMLResponse)
def home() -> RedirectResponse:
    """The tenants page."""
    return RedirectResponse("/audit/tenants", 303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, context: ContextDep, next: str = "/audit/tenants") -> HTMLResponse:
    """The sign-in form."""
    return _login_page(request, context, next)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    context: ContextDep,
    officer_id: Annotated[str, Form(max_length=63)],
    password: Annotated[str, Form(max_length=200)],
    csrf_token: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=500)] = "/audit/tenants",
) -> Response:
    """Check the password, then start a session (and record it in the region's ledger)."""
    check_same_origin(request)
    signin = context.signer.unsign("signin", request.cookies.get(SIGNIN_COOKIE))
    if signin is None or not context.signer.check_token("signin", str(signin.get("n")), csrf_token):
        message = "field 'csrf_token': the sign-in form expired or was not ours; try again"
        return _login_page(request, context, next, status=403, message=message)
    key = officer_id.strip().lower()
    device = device_of(context.signer, request.cookies.get(DEVICE_COOKIE), key)
    client = client_of(request.client.host if request.client else None)
    limits = context.throttle.limits(key, client, device)
    wait = context.throttle.retry_after(limits)
    if wait > 0:
        message = f"too many failed sign-ins for {key!r} from here: try again in {wait:.0f} s"
        refused = _login_page(request, context, next, status=429, message=message)
        refused.headers["Retry-After"] = str(math.ceil(wait))
        return refused
    officer = context.officers.authenticate(key, password)
    if officer is None:
        context.throttle.failed(limits)
        message = "unknown officer or wrong password"
        return _login_page(request, context, next, status=401, message=message)
    context.throttle.succeeded(limits)
    response = _start_session(request, context, officer, next)
    if device is None:
        token = new_device(context.signer, officer.id)
        _set_cookie(request, response, DEVICE_COOKIE, token, DEVICE_TTL_S, "/audit/login")
    return response


def _start_session(
    request: Request, context: AuditUiContext, officer: Officer, next_: str
) -> Response:
    """Sign `officer` in (a ledger record) and go on to `next_`."""
    principal = Principal.of(officer)
    context.access.require_sign_in(principal)
    cookie, session = new_session(context.signer, officer.id, fingerprint(officer))
    context.platform.plane(context.region).ledger.append(
        actor=principal.actor,
        action="officer.signed_in",
        subject=f"officer:{officer.id}",
        tenant_id=principal.tenant_id,
        details={"role": principal.role.value, "session": session.session_id[:8]},
    )
    response = RedirectResponse(_safe_next(next_), 303)
    _set_cookie(request, response, SESSION_COOKIE, cookie, SESSION_TTL_S, "/audit")
    response.delete_cookie(SIGNIN_COOKIE, path="/audit/login")
    return response


@router.post("/logout")
def logout(
    request: Request, who: SignedInDep, csrf_token: Annotated[str, Form(max_length=200)]
) -> Response:
    """End the session, on the server too: the cookie no longer works anywhere."""
    check_same_origin(request)
    who.check_csrf(csrf_token)
    session = who.session
    expires = datetime.fromtimestamp(session.expires, UTC)
    who.context.officers.revoke_session(session.session_id, session.officer_id, expires)
    who.context.platform.plane(who.context.region).ledger.append(
        actor=who.principal.actor,
        action="officer.signed_out",
        subject=f"officer:{session.officer_id}",
        tenant_id=who.principal.tenant_id,
        details={"session": session.session_id[:8]},
    )
    response = RedirectResponse("/audit/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/audit")
    return response


def _set_cookie(
    request: Request, response: Response, name: str, value: str, ttl_s: int, path: str
) -> None:
    """An HttpOnly, SameSite=Strict cookie (Secure over HTTPS)."""
    response.set_cookie(
        name,
        value,
        max_age=ttl_s,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
