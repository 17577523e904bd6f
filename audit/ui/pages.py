"""The audit UI's responses: pages with the security headers, downloads, and error pages.

Errors are pages with the status (from the shared map, `atlasrec.http_errors`) and a
one-line reason naming the field at fault; never a 500 for bad input. `AuditRoute` is the
route class of every audit page: it turns errors into those pages, and an expired or
missing session into a redirect to the sign-in form.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from atlasrec.http_errors import HANDLED, HttpError, http_error_of
from audit.ui.deps import SignedIn, SignInRequiredError, context_or_none, signed_in_or_none
from audit.ui.sessions import SESSION_COOKIE
from audit.ui.templating import templates

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TITLES = {
    400: "Bad request",
    403: "Refused",
    404: "Not found",
    409: "Conflict",
    422: "Invalid input",
    429: "Too many attempts",
}


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
    context = context_or_none(request)
    html = templates.get_template(name).render(
        who=who,
        region=context.region.value if context else "",
        **values,
    )
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def download(body: str, media_type: str, filename: str) -> Response:
    """A file to save (an attachment), with the security headers."""
    return Response(
        body,
        media_type=media_type,
        headers={
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


def error_page(request: Request, error: HttpError) -> HTMLResponse:
    """The page of an error: its status, a title and the one-line reason."""
    page = render(
        request,
        "error.html",
        status=error.status,
        who=signed_in_or_none(request),
        title=TITLES.get(error.status, "Error"),
        message=error.message,
    )
    for key, value in (error.headers or {}).items():
        page.headers[key] = value
    return page


def sign_in_again(request: Request) -> RedirectResponse:
    """To the sign-in form, then back here (a form of an expired session: to the tenants)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = "/audit/tenants"
    response = RedirectResponse(f"/audit/login?next={quote(target, safe='')}", 303)
    response.delete_cookie(SESSION_COOKIE, path="/audit")
    return response


class AuditRoute(APIRoute):
    """Turns errors into pages: sign-in redirect, 403/404/409/422 with a reason."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap the handler: errors become pages."""
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequiredError:
                return sign_in_again(request)
            except HANDLED as exc:
                return error_page(request, http_error_of(exc))

        return guarded
