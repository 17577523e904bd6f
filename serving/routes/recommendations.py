"""POST /v1/recommendations: top-k items for a user (or an anonymous session)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from atlasrec.errors import UnavailableError
from atlasrec.eventlog.records import ServedRecord
from atlasrec.freshness import age_of_version
from serving import schemas
from serving.arms import Arms
from serving.deps import (
    RecommendAuth,
    ServedRequestIdDep,
    ServingApp,
    ServingDep,
    check_known_items,
)
from serving.experiment_arms import serve_trial
from serving.pipeline import STAGES, Query, Served, recommend, served_record
from serving.runtime import TenantRuntime

log = logging.getLogger(__name__)
CANDIDATE_FAILED = "candidate"
"""A degraded stage: the release's candidate failed and live answered instead."""

router = APIRouter(prefix="/v1/recommendations", tags=["recommendations"])


@router.post("", response_model=schemas.RecommendationResponse)
async def recommendations(
    body: schemas.RecommendationRequest,
    serving: ServingDep,
    request_id: ServedRequestIdDep,
    runtime: RecommendAuth,
) -> schemas.RecommendationResponse:
    """Top-k items for a user (or an anonymous session), policy filtered.

    The response goes out only once its served record is kept (`serving.request_log`). A
    fallback answer (a tenant homed elsewhere, `atlasrec.fallback`) is counted instead:
    nothing of its user is kept here.
    """
    with serving.in_flight.serving():  # shadow scoring waits for the process to be idle
        return await _recommend(body, serving, request_id, runtime)


async def _recommend(
    body: schemas.RecommendationRequest,
    serving: ServingApp,
    request_id: str,
    runtime: TenantRuntime,
) -> schemas.RecommendationResponse:
    query, answer, arms = await run_in_threadpool(_serve, body, serving, runtime)
    served, arm = answer.served, answer.arm
    record = served_record(
        request_id, query, served, arm=arm, experiment_id=answer.experiment_id, teams=answer.teams
    )
    if runtime.fallback is not None:
        with runtime.lock:
            runtime.served += 1
    elif not await _recorded(serving, runtime, record):
        serving.metrics.requests.labels(runtime.scope.tenant_id, "recommendations", "503").inc()
        raise UnavailableError(
            f"tenant {runtime.scope.tenant_id!r}: the request could not be recorded (region "
            f"{serving.region.value!r} log and spool unavailable); nothing was served, retry"
        )
    serving.metrics.requests.labels(runtime.scope.tenant_id, "recommendations", "200").inc()
    serving.metrics.arm_requests.labels(runtime.scope.tenant_id, arm).inc()
    if arms is not None and arm == "live" and arms.shadowed():
        serving.shadow.submit(runtime, arms, query, served, request_id)
    return schemas.RecommendationResponse(
        request_id=request_id,
        tenant_id=runtime.scope.tenant_id,
        region=serving.region.value,
        model_version=served.model_version if runtime.fallback is None else runtime.fallback,
        degraded=bool(served.degraded),
        degraded_stages=served.degraded,
        stale=runtime.fallback is None
        and _stale(serving, runtime.scope.tenant_id, served.model_version),
        cold_start=served.cold_start,
        intent=served.intent,
        items=[schemas.ScoredItem(item_id=i, score=s) for i, s in served.items],
        timings_ms=schemas.Timings(
            **{s: served.timings_ms.get(s, 0.0) for s in (*STAGES, "total")}
        ),
        fallback=runtime.fallback is not None,
        experiment=None
        if answer.experiment_id is None
        else schemas.ExperimentArm(id=answer.experiment_id, arm=arm),
    )


async def _recorded(serving: ServingApp, runtime: TenantRuntime, record: ServedRecord) -> bool:
    """Keep a served request's record (`serving.request_log`); whether it was kept in time."""
    wait_s = serving.platform.settings.serving_record_wait_s
    return await serving.request_log.record(runtime.scope, record, wait_s)


@dataclass(frozen=True)
class Answer:
    """What served a request: the answer, its arm and, inside an experiment, its id."""

    served: Served
    arm: str
    experiment_id: str | None = None
    teams: str | None = None


def _serve(
    body: schemas.RecommendationRequest, serving: ServingApp, runtime: TenantRuntime
) -> tuple[Query, Answer, Arms | None]:
    """The request's query, what served it and the release in flight (a worker thread).

    An identified user is served by the running experiment's arm (`serving.experiment_arms`)
    or, in a release's canary share, by the candidate (`serving.arms`); the two never run
    at once on a tenant. A candidate that fails never fails the request: live answers it,
    marked degraded (`candidate`), and the record, still on the canary arm, counts against
    the candidate.
    """
    check_known_items(runtime, body.context.recent_items, "context.recent_items[{n}]")
    check_known_items(runtime, body.filters.exclude_items, "filters.exclude_items[{n}]")
    query = _query(body, runtime)
    arms, trial = runtime.arms, runtime.trial  # one read: a swap mid-request changes nothing
    if trial is not None and query.user_key is not None:
        got = serve_trial(
            trial, query.user_key, runtime.state, runtime.online, query, serving.budgets
        )
        answer = Answer(got.served, got.arm, trial.id, got.teams)
    elif arms is not None and arms.canary(query.user_key):  # one keyed hash per request
        answer = Answer(_canary(serving, runtime, arms, query), "canary")
    else:
        answer = Answer(recommend(runtime.state, runtime.online, query, serving.budgets), "live")
    _observe(serving, runtime.scope.tenant_id, answer.served)
    return query, answer, arms


def _canary(serving: ServingApp, runtime: TenantRuntime, arms: Arms, query: Query) -> Served:
    """The candidate's answer, or live's (degraded `candidate`) if the candidate fails."""
    try:
        return recommend(arms.state, runtime.online, query, serving.budgets)
    except Exception:
        log.exception("serving %s: candidate %s failed", runtime.scope.tenant_id, arms.version)
        served = recommend(runtime.state, runtime.online, query, serving.budgets)
        served.degraded.append(CANDIDATE_FAILED)
        return served


def _stale(serving: ServingApp, tenant_id: str, model_version: str) -> bool:
    """Whether the model served is past the tenant's model freshness SLO."""
    age = age_of_version(model_version, time.time())
    return age is not None and age > serving.platform.settings.freshness_slo(tenant_id, "model")


def _query(body: schemas.RecommendationRequest, runtime: TenantRuntime) -> Query:
    """The pipeline's query of a request (the user id pseudonymised for the tenant)."""
    categories = body.filters.categories
    user_key = None  # a fallback answer is non-personal: the user id is not used at all
    if body.user_id is not None and runtime.fallback is None:
        user_key = runtime.pseudonymise(body.user_id)
    return Query(
        user_key=user_key,
        k=body.k,
        recent_items=tuple(body.context.recent_items),
        user_age=body.context.user_age,
        country=body.context.country,
        categories=None if categories is None else frozenset(categories),
        exclude_items=frozenset(body.filters.exclude_items),
        intent=body.intent,
    )


def _observe(serving: ServingApp, tenant_id: str, served: Served) -> None:
    """Count the response's stage timings and degradations."""
    for stage in (*STAGES, "total"):
        serving.metrics.stage_seconds.labels(stage).observe(
            served.timings_ms.get(stage, 0.0) / 1000
        )
    for stage in served.degraded:
        serving.metrics.degraded.labels(tenant_id, stage).inc()
