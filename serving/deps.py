"""What the serving routes depend on: the app's state, the key cache and `Auth`.

The API key is mapped to its tenant in one dependency (`authenticated`): unknown or revoked
keys get 401, and a key of a tenant homed elsewhere gets 421 naming that tenant's region (the
refusal is audited at the region's boundary), never data.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Annotated, Any, NoReturn

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from atlasrec.consumers import ConsumerWorker, start_workers
from atlasrec.control.service import key_id_of
from atlasrec.control.tables import Tenant
from atlasrec.errors import CrossRegionError, UnavailableError
from atlasrec.http_errors import DATABASE_DOWN
from atlasrec.online_store import OnlineBackend, OnlineStore, make_backend
from atlasrec.pipelines.events import CONSUMERS, subscriptions
from atlasrec.platform import Platform
from atlasrec.repeated_refusals import RepeatedRefusals
from atlasrec.tenancy import Region, Scope
from serving.arms import InFlight, ShadowScorer
from serving.metrics import Metrics
from serving.request_log import RequestLog
from serving.runtime import RegionRuntime, TenantRuntime

_bearer = HTTPBearer(auto_error=False)
CLOSE_DRAIN_S = 5.0
REFUSALS_WINDOW_S = 60.0
SPOOL = "request-spool"
"""The region folder's sub-folder of the serving processes' request-log spools."""


class KeyCache:
    """API key -> tenant, remembered for `ttl_s` (a revoked key stops working within it).

    Keys are held by their SHA-256, never in clear; unknown keys are remembered too, so a
    flood of bad keys does not reach the control plane's database. While the control plane
    cannot be reached, a key's last answer stands for up to `stale_s` after it was read
    (and the control plane is left alone for `retry_s` after each failure); a key with no
    such answer gets 503.
    """

    MAX_ENTRIES = 100_000

    def __init__(
        self,
        authenticate: Callable[[str], Tenant | None],
        ttl_s: float,
        stale_s: float = 0.0,
        retry_s: float = 1.0,
    ) -> None:
        self._authenticate = authenticate
        self.ttl_s, self.stale_s, self.retry_s = ttl_s, stale_s, retry_s
        self._entries: dict[str, tuple[float, Tenant | None]] = {}
        """digest -> (when the control plane gave the answer, the answer)."""
        self._down_until = float("-inf")
        self.stale_answers = 0
        """Answers given from a stale entry while the control plane was unreachable."""

    def cached(self, api_key: str) -> tuple[bool, Tenant | None]:
        """(whether the key's answer is cached and fresh, the tenant if so)."""
        entry = self._entries.get(_digest(api_key))
        if entry is None or entry[0] + self.ttl_s < time.monotonic():
            return False, None
        return True, entry[1]

    def lookup(self, api_key: str) -> Tenant | None:
        """Ask the control plane (blocking) and remember the answer; a stale one if it is down."""
        digest = _digest(api_key)
        if time.monotonic() < self._down_until:
            return self._stale(digest, None)
        try:
            tenant = self._authenticate(api_key)
        except DATABASE_DOWN as exc:
            self._down_until = time.monotonic() + self.retry_s
            return self._stale(digest, exc)
        if self.ttl_s > 0:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = (time.monotonic(), tenant)
        return tenant

    def _stale(self, digest: str, cause: Exception | None) -> Tenant | None:
        """The key's last answer if it is at most `stale_s` old; else 503 (`UnavailableError`)."""
        entry = self._entries.get(digest)
        if entry is None or entry[0] + self.stale_s < time.monotonic():
            raise UnavailableError(
                "the control plane cannot be reached to check this API key, and its last "
                "answer is not known here: nothing was served, retry"
            ) from cause
        self.stale_answers += 1
        return entry[1]


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class ServingApp:
    """What the routes share: the region's runtime, request log, metrics and settings."""

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
        self.request_log = RequestLog(self.plane.events, settings.region_dir(region) / SPOOL)
        self.consumers: list[ConsumerWorker[Any]] = []
        if settings.serving_consumers:
            chosen = subscriptions(self.plane, list(CONSUMERS), online=online)
            self.consumers = start_workers(self.plane.events, chosen)
        self.metrics = Metrics()
        self.budgets = dict(settings.serving_budget_ms)
        self.keys = KeyCache(
            platform.control.authenticate,
            settings.serving_auth_cache_s,
            settings.serving_auth_stale_s,
        )
        self.refusals = RepeatedRefusals(self.plane.boundary, REFUSALS_WINDOW_S)
        self.in_flight = InFlight()
        """Live recommendations being served: shadow scoring waits for none."""
        self.shadow = ShadowScorer(
            self.budgets,
            lambda scope, record: self.request_log.served(scope, record),
            self.plane.boundary.request_ids.issue,
            self.metrics.observe_shadow,
            self.in_flight,
        )
        self.freshness_read_at = float("-inf")
        """When /metrics last read the region's freshness (`serving.gauges`)."""

    def close(self) -> None:
        """Stop background work, keeping every queued record first.

        The in-process `requests` consumer is given up to `CLOSE_DRAIN_S` to store what was
        logged; whatever it has not stored stays in the log for the next consumer.
        """
        self.runtime.stop()
        self.shadow.close()  # its records go to the request log: before that closes
        self.request_log.close()
        self.refusals.close()
        for worker in self.consumers:
            if worker.consumer.name == "requests":
                worker.caught_up(CLOSE_DRAIN_S)
        for worker in self.consumers:  # all at once: each may be waiting out a fetch
            worker.signal_stop()
        for worker in self.consumers:
            worker.stop()


# Async (no I/O): they stay on the event loop instead of taking a thread-pool hop.
async def serving_of(request: Request) -> ServingApp:
    """The app's shared serving state."""
    value: ServingApp = request.app.state.serving
    return value


async def request_id_of(request: Request) -> str:
    """The request's id (also in its `X-Request-ID` response header)."""
    value: str = request.state.request_id
    return value


ServingDep = Annotated[ServingApp, Depends(serving_of)]
RequestIdDep = Annotated[str, Depends(request_id_of)]


async def _tenant_of(
    serving: ServingApp, credentials: HTTPAuthorizationCredentials | None
) -> Tenant:
    """The tenant of the request's API key; 401 when missing, unknown or revoked."""
    api_key = credentials.credentials if credentials is not None else ""
    tenant: Tenant | None = None
    if credentials is not None and credentials.scheme.lower() == "bearer":
        hit, tenant = serving.keys.cached(api_key)
        if not hit:
            tenant = await run_in_threadpool(serving.keys.lookup, api_key)
    if tenant is None:
        serving.metrics.refusals.labels("unauthenticated").inc()
        raise HTTPException(
            401, "missing, unknown or revoked API key", {"WWW-Authenticate": "Bearer"}
        )
    return tenant


async def authenticated(
    serving: ServingDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TenantRuntime:
    """API key -> the tenant's runtime; 401 unknown/revoked, 421 homed elsewhere.

    The usual path (a cached key of a loaded tenant) does no I/O and stays on the event
    loop; database lookups, tenant loads and audited refusals run in the thread pool.
    """
    tenant = await _tenant_of(serving, credentials)
    if Region(tenant.home_region) != serving.region:
        await _refuse(serving, tenant, credentials)
    return await _home_runtime(serving, tenant)


async def _home_runtime(serving: ServingApp, tenant: Tenant) -> TenantRuntime:
    """The runtime of a tenant homed here (loaded in the thread pool on first use)."""
    runtime = serving.runtime.loaded_tenant(tenant.id)
    if runtime is None:
        runtime = await run_in_threadpool(serving.runtime.tenant, tenant)
    runtime.tenant = tenant  # the key cache's row: settings (event types) as of its TTL
    return runtime


async def recommender(
    serving: ServingDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TenantRuntime:
    """`authenticated`, or the fallback runtime of a tenant whose fallback region this is.

    That tenant gets non-personal answers (`atlasrec.fallback`) instead of 421.
    """
    tenant = await _tenant_of(serving, credentials)
    if Region(tenant.home_region) == serving.region:
        return await _home_runtime(serving, tenant)
    if tenant.fallback_region is None or Region(tenant.fallback_region) != serving.region:
        await _refuse(serving, tenant, credentials)
    runtime = await run_in_threadpool(serving.runtime.fallback, tenant)
    if runtime is None:
        raise UnavailableError(
            f"tenant {tenant.id!r}: no fallback copy of its catalog is published in region "
            f"{serving.region.value!r} yet; retry at its home region"
        )
    return runtime


async def _refuse(
    serving: ServingApp, tenant: Tenant, credentials: HTTPAuthorizationCredentials | None
) -> NoReturn:
    serving.metrics.refusals.labels("wrong_region").inc()
    api_key = credentials.credentials if credentials is not None else ""
    await run_in_threadpool(_refuse_foreign, serving, tenant, api_key)
    raise AssertionError("unreachable")


def _refuse_foreign(serving: ServingApp, tenant: Tenant, api_key: str) -> NoReturn:
    """Refuse (and audit, at the boundary) a tenant homed in another region: 421.

    A key's repeated refusals are one ledger record per `REFUSALS_WINDOW_S` (with a count).
    """
    with suppress(CrossRegionError):
        serving.refusals.admit(
            f"api-key:{key_id_of(api_key)}",
            Scope(tenant.id, serving.region),
            actor=f"api-key:{tenant.id}",
            action="serving.auth",
        )
    home = Region(tenant.home_region).value
    raise HTTPException(
        421, f"tenant {tenant.id!r} is served in region {home!r}, not {serving.region.value!r}"
    )


Auth = Annotated[TenantRuntime, Depends(authenticated)]
RecommendAuth = Annotated[TenantRuntime, Depends(recommender)]


async def served_request_id_of(
    request: Request, serving: ServingDep, runtime: RecommendAuth
) -> str:
    """A recommendation's id, bound to its tenant (`atlasrec.request_ids`); also its header.

    Events that respond to the recommendation name this id; only its tenant's are accepted.
    """
    request_ids = serving.plane.boundary.request_ids
    bound = request_ids.issue(runtime.scope.tenant_id, request.state.request_id)
    request.state.request_id = bound
    return bound


ServedRequestIdDep = Annotated[str, Depends(served_request_id_of)]

LOOPBACK = frozenset({"127.0.0.1", "::1"})
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


async def operator_only(
    request: Request,
    serving: ServingDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse (401) operator endpoints to anyone without the ops token.

    Without a configured token (`ATLASREC_OPS_TOKEN`) only a client on this host that came
    through no proxy is let in: the endpoints are then as if bound to an internal address.
    """
    token = serving.platform.settings.ops_token
    if token is not None:
        given = credentials.credentials if credentials is not None else ""
        if hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            return
    elif _on_this_host(request):
        return
    serving.metrics.refusals.labels("operator").inc()
    raise HTTPException(
        401,
        "operator endpoint: give the ops token (ATLASREC_OPS_TOKEN) as a bearer token"
        if token is not None
        else "operator endpoint: answered on this host only (or set ATLASREC_OPS_TOKEN)",
        {"WWW-Authenticate": 'Bearer realm="ops"'},
    )


def _on_this_host(request: Request) -> bool:
    """A loopback client that came through no proxy (a proxy here would make every client local)."""
    local = request.client is not None and request.client.host in LOOPBACK
    return local and not any(header in request.headers for header in PROXY_HEADERS)


OperatorOnly = Depends(operator_only)


def check_known_items(runtime: TenantRuntime, ids: list[str], where: str) -> None:
    """Refuse (422) item ids the tenant's catalog does not hold; `where` names the field."""
    position = runtime.state.position
    for n, item_id in enumerate(ids):
        if item_id not in position:
            raise HTTPException(
                422,
                f"tenant {runtime.scope.tenant_id!r}: {where.format(n=n)}: unknown item id "
                f"{item_id!r}",
            )
