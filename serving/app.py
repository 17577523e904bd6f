"""The regional serving app (FastAPI): one region's tenants, per the HTTP contract.

`create_app(region)` serves only tenants homed in `region`. The API key is mapped to its
tenant in one dependency (`authenticated`): unknown or revoked keys get 401, and a key of a
tenant homed elsewhere gets 421 naming that tenant's region (the refusal is audited at the
region's boundary), never data.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any, NoReturn

import faiss
import torch
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from atlasrec.catalog import PolicyAttributeError, parse_policy
from atlasrec.clock import utcnow
from atlasrec.control.tables import Tenant
from atlasrec.dataplane.embeddings import embedded_items
from atlasrec.dataplane.repository import TenantData
from atlasrec.dataplane.tables import ServedRequest
from atlasrec.errors import AtlasRecError, BoundaryViolation, ConfigError, CrossRegionError
from atlasrec.online_store import OnlineBackend, OnlineStore, make_backend
from atlasrec.platform import Platform
from atlasrec.settings import get_settings
from atlasrec.tenancy import Region, Scope
from audit.ui import router as audit_ui
from serving import schemas
from serving.metrics import Metrics
from serving.pipeline import STAGES, Query, recommend
from serving.recorder import EventRow, Recorder
from serving.runtime import ACTOR, RegionRuntime, TenantRuntime, catalog_items

MAX_BODY_BYTES = 1 << 20
log = logging.getLogger("atlasrec.serving")
_bearer = HTTPBearer(auto_error=False)


class ServingApp:
    """What the routes share: the region's runtime, recorder, metrics and settings."""

    def __init__(
        self, platform: Platform, region: Region, backend: OnlineBackend | None = None
    ) -> None:
        settings = platform.settings
        self.platform = platform
        self.region = region
        self.plane = platform.plane(region)
        self.backend = backend or make_backend(
            settings.redis_url, timeout_s=settings.serving_redis_timeout_s
        )
        online = OnlineStore(region, self.backend, self.plane.boundary)
        self.runtime = RegionRuntime(platform, region, online=online)
        self.recorder = Recorder(self.plane)
        self.metrics = Metrics()
        self.budgets = dict(settings.serving_budget_ms)
        self.keys = KeyCache(platform.control.authenticate, settings.serving_auth_cache_s)

    def close(self) -> None:
        """Stop background work, writing every queued record first."""
        self.runtime.stop()
        self.recorder.close()


def _request_id(request: Request) -> str:
    value: str = request.state.request_id
    return value


def serving_of(request: Request) -> ServingApp:
    """The app's shared serving state."""
    value: ServingApp = request.app.state.serving
    return value


class KeyCache:
    """API key -> tenant, remembered for `ttl_s` (a revoked key stops working within it).

    Keys are held by their SHA-256, never in clear; unknown keys are remembered too, so a
    flood of bad keys does not reach the control plane's database.
    """

    MAX_ENTRIES = 100_000

    def __init__(self, authenticate: Callable[[str], Tenant | None], ttl_s: float) -> None:
        self._authenticate = authenticate
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Tenant | None]] = {}

    def cached(self, api_key: str) -> tuple[bool, Tenant | None]:
        """(whether the key's answer is cached and fresh, the tenant if so)."""
        entry = self._entries.get(hashlib.sha256(api_key.encode()).hexdigest())
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def lookup(self, api_key: str) -> Tenant | None:
        """Ask the control plane (blocking) and remember the answer."""
        tenant = self._authenticate(api_key)
        if self.ttl_s > 0:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            digest = hashlib.sha256(api_key.encode()).hexdigest()
            self._entries[digest] = (time.monotonic() + self.ttl_s, tenant)
        return tenant


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TenantRuntime:
    """API key -> the tenant's runtime; 401 unknown/revoked, 421 homed elsewhere.

    The usual path (a cached key of a loaded tenant) does no I/O and stays on the event
    loop; database lookups, tenant loads and audited refusals run in the thread pool.
    """
    serving = serving_of(request)
    tenant: Tenant | None = None
    if credentials is not None and credentials.scheme.lower() == "bearer":
        hit, tenant = serving.keys.cached(credentials.credentials)
        if not hit:
            tenant = await run_in_threadpool(serving.keys.lookup, credentials.credentials)
    if tenant is None:
        serving.metrics.refusals.labels("unauthenticated").inc()
        raise HTTPException(
            401, "missing, unknown or revoked API key", {"WWW-Authenticate": "Bearer"}
        )
    if Region(tenant.home_region) != serving.region:
        serving.metrics.refusals.labels("wrong_region").inc()
        await run_in_threadpool(_refuse_foreign, serving, tenant)
    runtime = serving.runtime.loaded_tenant(tenant.id)
    if runtime is None:
        runtime = await run_in_threadpool(serving.runtime.tenant, tenant)
    return runtime


def _refuse_foreign(serving: ServingApp, tenant: Tenant) -> NoReturn:
    """Refuse (and audit, at the boundary) a tenant homed in another region: 421."""
    with suppress(CrossRegionError):
        serving.plane.boundary.admit(
            Scope(tenant.id, serving.region), actor=f"api-key:{tenant.id}", action="serving.auth"
        )
    home = Region(tenant.home_region).value
    raise HTTPException(
        421, f"tenant {tenant.id!r} is served in region {home!r}, not {serving.region.value!r}"
    )


Auth = Annotated[TenantRuntime, Depends(authenticated)]


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
    owned = platform is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal platform
        platform = platform or Platform()
        serving = ServingApp(platform, region, backend)
        app.state.serving = serving
        if preload:
            for tenant in platform.control.list_tenants(region):
                serving.runtime.tenant(tenant)
        if freeze_gc:
            serving.runtime.freeze_gc = True
            serving.runtime.freeze()
        if refresh:
            serving.runtime.start(platform.settings.serving_reload_s)
        try:
            yield
        finally:
            serving.close()
            if owned:
                platform.close()

    app = FastAPI(
        title=f"AtlasRec serving ({region.value})",
        version="1",
        lifespan=lifespan,
        responses={
            401: {"model": schemas.ErrorBody},
            403: {"model": schemas.ErrorBody},
            413: {"model": schemas.ErrorBody},
            421: {"model": schemas.ErrorBody},
            422: {"model": schemas.ErrorBody},
        },
    )
    app.add_middleware(_BodyLimit)
    app.add_middleware(_RequestId)
    app.include_router(audit_ui)  # the privacy officer's pages, under /audit

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors, "request_id": _request_id(request)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail, "request_id": getattr(request.state, "request_id", None)},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(AtlasRecError)
    async def rejected(request: Request, exc: AtlasRecError) -> JSONResponse:
        status = 403 if isinstance(exc, BoundaryViolation) else 422  # refusals are audited
        return JSONResponse(
            {"detail": str(exc), "request_id": _request_id(request)}, status_code=status
        )

    def unknown_items(runtime: TenantRuntime, ids: list[str], where: str) -> None:
        position = runtime.state.position
        for n, item_id in enumerate(ids):
            if item_id not in position:
                raise HTTPException(
                    422,
                    f"tenant {runtime.scope.tenant_id!r}: {where.format(n=n)}: unknown item id "
                    f"{item_id!r}",
                )

    @app.post("/v1/recommendations", response_model=schemas.RecommendationResponse)
    def recommendations(
        body: schemas.RecommendationRequest, request: Request, runtime: Auth
    ) -> schemas.RecommendationResponse:
        """Top-k items for a user (or an anonymous session), policy filtered."""
        serving = serving_of(request)
        unknown_items(runtime, body.context.recent_items, "context.recent_items[{n}]")
        unknown_items(runtime, body.filters.exclude_items, "filters.exclude_items[{n}]")
        user_key = None if body.user_id is None else runtime.pseudonymise(body.user_id)
        query = Query(
            user_key=user_key,
            k=body.k,
            recent_items=tuple(body.context.recent_items),
            user_age=body.context.user_age,
            country=body.context.country,
            categories=None
            if body.filters.categories is None
            else frozenset(body.filters.categories),
            exclude_items=frozenset(body.filters.exclude_items),
            intent=body.intent,
        )
        served = recommend(runtime.state, runtime.online, query, serving.budgets)
        request_id = _request_id(request)
        tenant_id = runtime.scope.tenant_id
        for stage in (*STAGES, "total"):
            serving.metrics.stage_seconds.labels(stage).observe(
                served.timings_ms.get(stage, 0.0) / 1000
            )
        for stage in served.degraded:
            serving.metrics.degraded.labels(tenant_id, stage).inc()
        serving.metrics.requests.labels(tenant_id, "recommendations", "200").inc()
        serving.recorder.served(
            runtime.scope,
            ServedRequest(
                request_id=request_id,
                tenant_id=tenant_id,
                served_at=utcnow(),
                model_version=served.model_version,
                user_key=user_key,
                k=body.k,
                items=[item_id for item_id, _ in served.items],
                cold_start=served.cold_start,
                degraded=served.degraded,
                timings_ms=served.timings_ms,
                intent=served.intent,
            ),
        )
        return schemas.RecommendationResponse(
            request_id=request_id,
            tenant_id=tenant_id,
            region=region.value,
            model_version=served.model_version,
            degraded=bool(served.degraded),
            degraded_stages=served.degraded,
            cold_start=served.cold_start,
            intent=served.intent,
            items=[schemas.ScoredItem(item_id=i, score=s) for i, s in served.items],
            timings_ms=schemas.Timings(
                **{s: served.timings_ms.get(s, 0.0) for s in (*STAGES, "total")}
            ),
        )

    @app.post("/v1/events", status_code=202, response_model=schemas.EventsResponse)
    def events(
        body: schemas.EventsRequest, request: Request, runtime: Auth
    ) -> schemas.EventsResponse:
        """Record interactions: the user's features change at once, the rows are stored."""
        serving = serving_of(request)
        unknown_items(runtime, [e.item_id for e in body.events], "events[{n}].item_id")
        now = time.time()
        rows = [
            EventRow(
                user_key=runtime.pseudonymise(e.user_id),
                item_id=e.item_id,
                ts=int(now if e.timestamp is None else e.timestamp),
                event=e.event,
                weight=e.weight,
            )
            for e in body.events
        ]
        online = runtime.online.record([(r.user_key, r.item_id, r.weight, r.ts) for r in rows])
        serving.recorder.events(runtime.scope, rows)
        serving.metrics.requests.labels(runtime.scope.tenant_id, "events", "202").inc()
        return schemas.EventsResponse(
            request_id=_request_id(request), accepted=len(rows), online=online
        )

    @app.put("/v1/catalog/items", response_model=schemas.CatalogResponse)
    def catalog(
        body: schemas.CatalogRequest, request: Request, runtime: Auth
    ) -> schemas.CatalogResponse:
        """Insert or update items; they are recommendable as soon as this returns."""
        serving = serving_of(request)
        scope = runtime.scope
        rows: dict[str, dict[str, Any]] = {}
        for n, item in enumerate(body.items):
            try:
                parse_policy(item.attributes)
            except PolicyAttributeError as exc:
                raise HTTPException(
                    422, f"tenant {scope.tenant_id!r}: items[{n}] ({item.item_id!r}): {exc}"
                ) from None
            rows[item.item_id] = {
                "item_id": item.item_id,
                "title": item.title,
                "category": item.category or None,
                "description": item.description or None,
                "attributes": item.attributes,
                "updated_at": utcnow(),
            }
        with serving.plane.session(scope, actor=ACTOR, action="catalog.upsert") as session:
            TenantData(session).upsert_items(list(rows.values()))
            serving.plane.ledger.append(
                actor=f"api-key:{scope.tenant_id}",
                action="catalog.upserted",
                subject=f"tenant:{scope.tenant_id}",
                tenant_id=scope.tenant_id,
                session=session,
                details={"items": len(rows), "request_id": _request_id(request)},
            )
        embedded = embedded_items(serving.plane, scope, actor=ACTOR, item_ids=list(rows))
        runtime.apply_items(catalog_items(embedded))
        serving.metrics.requests.labels(scope.tenant_id, "catalog", "200").inc()
        return schemas.CatalogResponse(
            request_id=_request_id(request),
            upserted=len(rows),
            model_version=runtime.state.model_version,
        )

    @app.get("/healthz")
    def healthz(request: Request) -> dict[str, Any]:
        """Liveness, and what the process is serving from."""
        serving = serving_of(request)
        return {
            "status": "ok",
            "region": region.value,
            "tenants": {r.scope.tenant_id: r.state.model_version for r in serving.runtime.loaded()},
            "online_store": "unreachable" if serving.runtime.breaker.open else "ok",
            "queued_records_written": serving.recorder.written_requests,
        }

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        serving = serving_of(request)
        serving.metrics.model_swaps.set(serving.runtime.swaps)
        return Response(serving.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


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


Scope_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _HttpMiddleware:
    """A pure ASGI middleware that acts on HTTP requests only (`handle`)."""

    def __init__(self, app: Callable[[Scope_, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope_, receive: Receive, send: Send) -> None:
        """Process one HTTP request."""
        raise NotImplementedError


class _BodyLimit(_HttpMiddleware):
    """Refuse request bodies over `MAX_BODY_BYTES` with 413 (declared or streamed)."""

    async def handle(self, scope: Scope_, receive: Receive, send: Send) -> None:
        """Refuse a declared or streamed body over the limit."""
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            await _too_large(send)
            return
        seen = 0

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send)


class _RequestId(_HttpMiddleware):
    """Give each request an id (`request.state.request_id`) and the `X-Request-ID` header."""

    async def handle(self, scope: Scope_, receive: Receive, send: Send) -> None:
        """Stamp the id on the request's state and on its response."""
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def with_header(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        await self.app(scope, receive, with_header)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send) -> None:
    body = b'{"detail":"request body over 1 MiB"}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
