"""The regional serving app (FastAPI): one region's tenants, per the HTTP contract.

`create_app(region)` serves only tenants homed in `region`; it assembles the routers of
`serving.routes`, the middleware, the shared error map and the privacy officer's UI (under
`/audit`, given what it needs at start-up). What the routes depend on is in `serving.deps`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import faiss
import torch
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from atlasrec.errors import ConfigError
from atlasrec.http_errors import HttpError, install_error_handlers
from atlasrec.online_store import OnlineBackend
from atlasrec.platform import Platform
from atlasrec.settings import get_settings
from atlasrec.tenancy import Region
from audit.ui import AuditUiContext, mount_audit_ui
from serving import schemas
from serving.deps import ServingApp
from serving.middleware import BodyLimit, RequestId
from serving.routes import api_router

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class _Startup:
    """How an app starts: its platform (None: its own), online backend and start-up work."""

    region: Region
    platform: Platform | None
    backend: OnlineBackend | None
    preload: bool
    refresh: bool
    freeze_gc: bool


def create_app(
    region: Region,
    *,
    platform: Platform | None = None,
    backend: OnlineBackend | None = None,
    preload: bool = True,
    refresh: bool = True,
    freeze_gc: bool = False,
) -> FastAPI:
    """The serving app of `region` (`preload` loads every homed tenant at start).

    `freeze_gc` (the real server's setting) moves the loaded snapshots out of the cyclic
    garbage collector's reach after start-up and after each swap: a full collection over a
    100K-item catalog's objects otherwise pauses every request for tens of milliseconds.
    """
    startup = _Startup(region, platform, backend, preload, refresh, freeze_gc)
    app = FastAPI(
        title=f"AtlasRec serving ({region.value})",
        version="1",
        lifespan=_lifespan(startup),
        responses={status: {"model": schemas.ErrorBody} for status in (401, 403, 413, 421, 422)},
    )
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestId)
    install_error_handlers(app, _json_error)
    app.include_router(api_router)
    return app


def _lifespan(startup: _Startup) -> Lifespan:
    """Start the region's serving state (and the audit UI) with the app; stop it after."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform = startup.platform or Platform()
        serving = _start(app, platform, startup)
        try:
            yield
        finally:
            serving.close()
            if startup.platform is None:
                platform.close()

    return lifespan


def _start(app: FastAPI, platform: Platform, startup: _Startup) -> ServingApp:
    """The serving state of `app`, loaded and refreshing; the audit UI mounted beside it."""
    serving = ServingApp(platform, startup.region, startup.backend)
    app.state.serving = serving
    mount_audit_ui(app, AuditUiContext.of(platform, startup.region))
    if startup.preload:
        for tenant in platform.control.list_tenants(startup.region):
            serving.runtime.tenant(tenant)
    if startup.freeze_gc:
        serving.runtime.freeze_gc = True
        serving.runtime.freeze()
    if startup.refresh:
        serving.runtime.start(platform.settings.serving_reload_s)
    return serving


def _json_error(request: Request, error: HttpError) -> Response:
    """An error as the API answers it: the detail and the request's id."""
    return JSONResponse(
        {"detail": error.detail, "request_id": getattr(request.state, "request_id", None)},
        status_code=error.status,
        headers=error.headers,
    )


def app_from_settings() -> FastAPI:
    """The app of the region this process is pinned to (`ATLASREC_REGION`)."""
    region = get_settings().region
    if region is None:
        raise ConfigError("ATLASREC_REGION must name the region this serving process serves")
    # One request is too small to gain from intra-op threads, and they contend with the
    # other requests' threads (and worker processes) for the same cores.
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    return create_app(region, freeze_gc=True)
