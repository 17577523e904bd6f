"""The one map from errors to HTTP responses, shared by the serving app and the audit UI.

`http_error_of` turns an AtlasRec error, an `HTTPException` or a request validation error
into a status, a detail and headers; each app renders that its own way (JSON for the API,
an HTML page in the audit UI). `install_error_handlers` registers the map on an app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as db_errors

from atlasrec.errors import (
    AtlasRecError,
    ConflictError,
    NotFoundError,
    RefusedError,
    UnavailableError,
)

# An error's status is that of the first of its classes (most specific first) found here.
STATUS: dict[type[Exception], int] = {
    RefusedError: 403,  # boundary and access refusals, audited where they are raised
    NotFoundError: 404,
    ConflictError: 409,
    UnavailableError: 503,  # nothing was acknowledged: the client retries
    AtlasRecError: 422,
    RequestValidationError: 422,
}
RETRY_AFTER_S = 1
log = logging.getLogger("atlasrec.http")
DATABASE_DOWN: tuple[type[Exception], ...] = (
    db_errors.OperationalError,  # connection refused or lost, server shut down
    db_errors.InterfaceError,
    db_errors.TimeoutError,  # no pooled connection came free in time
)
"""Database errors that mean "unreachable now", not "wrong input": 503, retry."""
DATABASE_DOWN_MESSAGE = (
    "the database is unavailable (connection refused or lost): nothing was written, retry"
)
HANDLED: tuple[type[Exception], ...] = (
    AtlasRecError,
    HTTPException,
    RequestValidationError,
    *DATABASE_DOWN,
)


@dataclass(frozen=True)
class HttpError:
    """An error as HTTP sees it.

    `detail` is what an API answers (a list for validation errors); `message` is one line
    for people, naming the fields at fault.
    """

    status: int
    detail: Any
    message: str
    headers: Mapping[str, str] | None = None


def status_of(exc: Exception) -> int:
    """The HTTP status of an AtlasRec or validation error (500 when it is not mapped)."""
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def http_error_of(exc: Exception) -> HttpError:
    """The status, detail and headers of an error (one of `HANDLED`)."""
    if isinstance(exc, HTTPException):
        return HttpError(exc.status_code, exc.detail, str(exc.detail), exc.headers)
    if isinstance(exc, RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return HttpError(status_of(exc), errors, _field_errors(exc))
    if isinstance(exc, DATABASE_DOWN):  # its text names hosts and SQL: not for clients
        log.warning("answered 503: %s", exc)
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        return HttpError(503, DATABASE_DOWN_MESSAGE, DATABASE_DOWN_MESSAGE, retry)
    status = status_of(exc)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return HttpError(status, str(exc), str(exc), headers)


def _field_errors(exc: RequestValidationError) -> str:
    """`field 'a.b': reason; ...` (where in the request the field was is left out)."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
        parts.append(f"field {'.'.join(loc) or '?'!r}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid input"


Render = Callable[[Request, HttpError], Response]


def install_error_handlers(app: FastAPI, render: Render) -> None:
    """Answer every error in `HANDLED` raised by `app`'s routes with `render`."""

    async def handle(request: Request, exc: Exception) -> Response:
        return render(request, http_error_of(exc))

    handler: Callable[[Request, Exception], Awaitable[Response]] = handle
    for kind in HANDLED:
        app.add_exception_handler(kind, handler)
