"""The UI's stylesheet (no other files are served)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Response

from audit.ui.pages import AuditRoute

router = APIRouter(prefix="/static", tags=["audit: static"], route_class=AuditRoute)

UI = Path(__file__).parent.parent
STATIC = {"audit.css": ("text/css", (UI / "static" / "audit.css").read_bytes())}


@router.get("/{name}")
def static(name: str) -> Response:
    """The UI's stylesheet (no other files are served)."""
    if name not in STATIC:
        raise HTTPException(404, f"no static file {name!r}")
    media_type, body = STATIC[name]
    return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=3600"})
