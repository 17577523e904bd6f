"""Background jobs: in-process by default, Celery tasks on Redis when a broker is configured.

With `ATLASREC_BROKER_URL` (Redis), a job runs as a Celery task on a worker of the region:

    ATLASREC_BROKER_URL=redis://127.0.0.1:6379/0 celery -A atlasrec.jobs worker --pool=solo

Federated rounds are scheduled per region by Celery beat (`beat_schedule`: one entry per
region every `ATLASREC_FEDERATION_INTERVAL_S`, on that region's queue), and so are the
drift checks, the empirical privacy audits of new DP releases, a leakage scan, the online
metrics of served recommendations (`atlasrec.outcomes`), the analysis of releases in flight
(`atlasrec.rollout_analysis`) and retrains of stale or drifted models (every
`ATLASREC_RETRAIN_CHECK_S`, `atlasrec.pipelines.retrain`):

    ATLASREC_BROKER_URL=redis://127.0.0.1:6379/0 celery -A atlasrec.jobs beat

Errors travel back as plain data (type and one-line reason) and are raised again here with
the same message, so the CLI behaves the same either way.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout

from atlasrec.errors import AtlasRecError
from atlasrec.experiment_analysis import analyse_region as analyse_experiments
from atlasrec.leakage import scan_region
from atlasrec.models.training import Progress
from atlasrec.outcomes import refresh_region_outcomes
from atlasrec.pipelines.monitor import check_region_drift
from atlasrec.pipelines.retrain import retrain_stale, roll_out
from atlasrec.pipelines.train import TrainResult, train_tenant
from atlasrec.platform import Platform
from atlasrec.privacy_audit import audit_pending
from atlasrec.rollout_analysis import analyse_region
from atlasrec.settings import Settings, get_settings
from atlasrec.tenancy import Region, parse_region

RETRAIN_ROLLS_OUT = True
"""A retrain of a stale or drifted model is a candidate whose rollout starts at once
(`atlasrec.pipelines.retrain.roll_out`): the analysis takes it live or rolls it back."""


class JobError(AtlasRecError):
    """A job failed on a worker (the message is the worker's one-line reason)."""


def make_celery(settings: Settings) -> Celery:
    """The Celery app for a broker URL (results go back through the same Redis)."""
    app = Celery("atlasrec", broker=settings.broker_url, backend=settings.broker_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        task_default_queue=f"atlasrec-{settings.region.value}" if settings.region else "atlasrec",
    )
    app.task(name="atlasrec.train")(_train_task)
    app.task(name="atlasrec.federate")(_federate_task)
    app.task(name="atlasrec.retrain_stale")(_retrain_stale_task)
    app.conf.beat_schedule = federation_schedule(settings) | retrain_schedule(settings)
    return app


def federation_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """One periodic `federate` per region, routed to the region's own queue."""
    return {
        f"federate-{region.value}": {
            "task": "atlasrec.federate",
            "schedule": settings.federation_interval_s,
            "args": [region.value, settings.federation_rounds, "celery-beat"],
            "options": {"queue": f"atlasrec-{region.value}"},
        }
        for region in Region
    }


def retrain_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """One periodic check for stale models per region, on the region's own queue."""
    return {
        f"retrain-stale-{region.value}": {
            "task": "atlasrec.retrain_stale",
            "schedule": settings.retrain_check_s,
            "args": [region.value, "celery-beat"],
            "options": {"queue": f"atlasrec-{region.value}"},
        }
        for region in Region
    }


def _retrain_stale_task(region: str, actor: str) -> dict[str, Any]:
    """The region's watch: drift, audits, leakage, online metrics, rollouts, retrains.

    Each retrain is a `train` task of its own.
    """
    platform = Platform()
    app = make_celery(platform.settings)

    def submit(tenant_id: str) -> str:
        task = app.send_task(
            "atlasrec.train",
            args=[tenant_id, None, False, actor, False, False, RETRAIN_ROLLS_OUT],
            queue=f"atlasrec-{region}",
        )
        return str(task.id)

    try:
        check_region_drift(platform, parse_region(region), actor=actor)
        audit_pending(platform, parse_region(region), actor=actor)
        scan_region(platform, parse_region(region), actor=actor)
        refresh_region_outcomes(platform, parse_region(region), actor=actor)
        analyse_region(platform, parse_region(region))
        analyse_experiments(platform, parse_region(region))
        decisions = retrain_stale(platform, parse_region(region), actor=actor, submit=submit)
    except AtlasRecError as exc:
        return {"ok": False, "error": str(exc), "type": type(exc).__name__}
    finally:
        platform.close()
    return {"ok": True, "decisions": decisions}


def _federate_task(region: str, rounds: int, actor: str) -> dict[str, Any]:
    """The worker side of `federate`: the region's rounds, in the worker's process."""
    from server.embedded import run_embedded
    from server.federation import FederationConfig

    platform = Platform()
    try:
        result = run_embedded(
            platform, parse_region(region), FederationConfig(rounds=rounds), actor=actor
        )
    except AtlasRecError as exc:
        return {"ok": False, "error": str(exc), "type": type(exc).__name__}
    finally:
        platform.close()
    return {"ok": True, **asdict(result), "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _train_task(
    tenant_id: str,
    epsilon: float | None,
    no_dp: bool,
    actor: str,
    no_backbone: bool = False,
    promote: bool = False,
    rollout: bool = False,
) -> dict[str, Any]:
    """The worker side of `train`: runs the same pipeline in the worker's process."""
    platform = Platform()
    try:
        result = train_tenant(
            platform,
            tenant_id,
            actor=actor,
            epsilon=epsilon,
            no_dp=no_dp,
            no_backbone=no_backbone,
            promote=promote,
        )
        started = roll_out(platform, result, actor=actor) if rollout else None
    except AtlasRecError as exc:
        return {"ok": False, "error": str(exc), "type": type(exc).__name__}
    finally:
        platform.close()
    return _done(result, worker=f"{socket.gethostname()}:{os.getpid()}", rollout=started)


def _done(
    result: TrainResult, *, worker: str, rollout: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A finished training as plain data (what a Celery result can carry)."""
    return {"ok": True, **asdict(result), "worker": worker, "rollout": rollout}


def run_train(
    platform: Platform,
    tenant_id: str,
    *,
    actor: str,
    epsilon: float | None,
    no_dp: bool,
    no_backbone: bool = False,
    promote: bool = False,
    rollout: bool = False,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Train in-process (embedded) or as a Celery task (broker configured); same result.

    With `rollout`, a candidate's rollout starts once it is published (`roll_out`).
    """
    if platform.settings.broker_url is None:
        result = train_tenant(
            platform,
            tenant_id,
            actor=actor,
            epsilon=epsilon,
            no_dp=no_dp,
            no_backbone=no_backbone,
            promote=promote,
        )
        started = roll_out(platform, result, actor=actor) if rollout else None
        return _done(result, worker="in-process", rollout=started)
    platform.control.get_tenant(tenant_id)  # unknown tenants fail here, not on a worker
    app = make_celery(platform.settings)
    outcome = app.send_task(
        "atlasrec.train", args=[tenant_id, epsilon, no_dp, actor, no_backbone, promote, rollout]
    )
    try:
        value: dict[str, Any] = outcome.get(timeout=timeout_s)
    except ResultTimeout:
        raise JobError(
            f"tenant {tenant_id!r}: no worker finished training within {timeout_s:g}s"
        ) from None
    if not value.get("ok"):
        raise JobError(str(value.get("error")))
    return value


def train(
    platform: Platform,
    tenant_id: str,
    *,
    actor: str,
    epsilon: float | None,
    no_dp: bool,
    no_backbone: bool = False,
    progress: Progress | None = None,
    promote: bool = False,
) -> TrainResult:
    """Train on a region worker when a broker is configured, else here (with `progress`)."""
    if platform.settings.broker_url is None:
        return train_tenant(
            platform,
            tenant_id,
            actor=actor,
            epsilon=epsilon,
            no_dp=no_dp,
            no_backbone=no_backbone,
            progress=progress,
            promote=promote,
        )
    done = run_train(
        platform,
        tenant_id,
        actor=actor,
        epsilon=epsilon,
        no_dp=no_dp,
        no_backbone=no_backbone,
        promote=promote,
    )
    return TrainResult(
        done["tenant_id"], done["region"], done["model_version"], done["lineage"], done["release"]
    )


celery_app = make_celery(get_settings()) if get_settings().broker_url else None
"""Module-level app for `celery -A atlasrec.jobs worker` (needs ATLASREC_BROKER_URL)."""
app = celery_app
