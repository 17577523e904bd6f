"""The UI's stylesheet and icon (no other files are served)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Response

from audit.ui.pages import AuditRoute

router = APIRouter(prefix="/static", tags=["audit: static"], route_class=AuditRoute)

UI = Path(__file__).parent.parent
STATIC = {
    name: (media_type, (UI / "static" / name).read_bytes())
    for name, media_type in (("audit.css", "text/css"), ("favicon.svg", "image/svg+xml"))
}


@router.get("/{name}")
def static(name: str) -> Response:
    """The UI's stylesheet or icon (no other files are served)."""
    if name not in STATIC:
        raise HTTPException(404, f"no static file {name!r}")
    media_type, body = STATIC[name]
    return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=3600"})
