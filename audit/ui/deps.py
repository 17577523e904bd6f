"""What the audit UI's pages depend on: its context (given at mount) and the signed-in officer.

The context is handed over by whoever mounts the UI (`audit.ui.mount_audit_ui`) and kept
under the UI's own key of the app's state; the UI reads nothing else of the app.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from sqlalchemy.exc import SQLAlchemyError

from atlasrec.control.officers import Officers, fingerprint
from atlasrec.control.signin_throttle import SignInThrottle
from atlasrec.errors import AtlasRecError
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from audit.access import Access, Principal
from audit.alerts import Alert, region_alerts
from audit.ui.sessions import SESSION_COOKIE, SessionData, Signer, read_session

STATE_KEY = "audit_ui"
log = logging.getLogger("atlasrec.audit")


class SignInRequiredError(Exception):
    """No valid session: the page redirects to the sign-in form."""


@dataclass
class AuditUiContext:
    """What the audit UI of one region needs: its platform, region, signer and throttle."""

    platform: Platform
    region: Region
    access: Access
    officers: Officers
    signer: Signer
    throttle: SignInThrottle

    @classmethod
    def of(cls, platform: Platform, region: Region) -> AuditUiContext:
        """The context of `region`'s audit UI."""
        return cls(
            platform,
            region,
            Access(platform, region),
            Officers(platform.control.engine),
            Signer.for_region(platform.secret, region.value),
            SignInThrottle(platform.control.engine),
        )


def context_or_none(request: Request) -> AuditUiContext | None:
    """The audit UI's context, if it was mounted with one."""
    context: AuditUiContext | None = getattr(request.app.state, STATE_KEY, None)
    return context


async def context_of(request: Request) -> AuditUiContext:
    """The audit UI's context (async: no I/O, no thread-pool hop)."""
    context = context_or_none(request)
    if context is None:
        raise RuntimeError("the audit UI is not mounted (audit.ui.mount_audit_ui)")
    return context


ContextDep = Annotated[AuditUiContext, Depends(context_of)]


@dataclass(frozen=True)
class SignedIn:
    """The signed-in officer of a request."""

    context: AuditUiContext
    principal: Principal
    name: str
    session: SessionData

    @property
    def csrf(self) -> str:
        """The CSRF token of this session's forms."""
        return self.context.signer.token("session", self.session.session_id)

    def check_csrf(self, token: str) -> None:
        """Refuse a form without this session's token."""
        if not self.context.signer.check_token("session", self.session.session_id, token):
            raise HTTPException(403, "field 'csrf_token': missing or invalid (reload the page)")

    @cached_property
    def alerts(self) -> list[Alert]:
        """The alerts of the tenants this officer may see here (read once per request)."""
        visible = self.context.access.visible_tenants(self.principal)
        return region_alerts(self.context.platform, self.context.region, visible)

    def alert_count(self) -> int | None:
        """How many alerts the tenants this officer may see here have (None: unknown now).

        The navigation's badge: best effort, so a page (an error page of a database outage
        included) still renders when the alerts cannot be read.
        """
        try:
            return len(self.alerts)
        except (AtlasRecError, SQLAlchemyError, OSError):
            log.warning("alerts unavailable for the navigation", exc_info=True)
            return None


def signed_in(request: Request, context: ContextDep) -> SignedIn:
    """The officer of the session cookie (still active, same password, authority here)."""
    session = read_session(context.signer, request.cookies.get(SESSION_COOKIE))
    if session is None or context.officers.session_revoked(session.session_id):
        raise SignInRequiredError
    officer = context.officers.get(session.officer_id)
    if officer is None or officer.disabled_at is not None:
        raise SignInRequiredError
    if fingerprint(officer) != session.fingerprint:
        raise SignInRequiredError
    principal = Principal.of(officer)
    if not context.access.can_sign_in(principal):
        raise SignInRequiredError
    who = SignedIn(context, principal, officer.name, session)
    request.state.audit_who = who  # an error page of this request keeps the navigation
    return who


def signed_in_or_none(request: Request) -> SignedIn | None:
    """The officer `signed_in` found for this request, if it got that far."""
    who: SignedIn | None = getattr(request.state, "audit_who", None)
    return who


SignedInDep = Annotated[SignedIn, Depends(signed_in)]


def check_same_origin(request: Request) -> None:
    """Refuse (403) a form posted from another origin."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-origin form submission refused")
