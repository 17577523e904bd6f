"""The injected faults: each takes something away under traffic, then gives it back.

Each times how long the region took to recover:

- `kill9`: serving process 0 gets SIGKILL; a supervisor starts it again `RESTART_DELAY_S`
  later. Recovery: from the kill until the process answers /healthz.
- `postgres`: the region's (and control plane's) PostgreSQL stops (`-m immediate`, as on a
  crash) for the fault's length. Recovery: from its restart until every served record
  acknowledged during the outage is in the region database.
- `redis`: Redis is killed (it keeps nothing on disk) and started again, empty. Recovery:
  from its restart until `CLEAN_RUN` recommendations in a row are not degraded.
- `disk_full`: the artifact store's disk is filled; a training run must fail cleanly
  while serving goes on with the live model. Recovery: from freeing the space until the
  responses carry the model of a new training run.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Any

from benchmarks.chaos.cluster import TENANT, Region, region_sql
from benchmarks.chaos.services import wait_until
from benchmarks.chaos.traffic import Traffic
from benchmarks.events.processes import _answers

RESTART_DELAY_S = 1.0
CLEAN_RUN = 20
RECOVERY_TIMEOUT_S = 180.0
Fault = Callable[[Region, Traffic, float], dict[str, Any]]


def kill9(region: Region, traffic: Traffic, hold_s: float) -> dict[str, Any]:
    """SIGKILL serving process 0; restart it after `RESTART_DELAY_S`."""
    killed = time.perf_counter()
    region.kill9(0)
    time.sleep(RESTART_DELAY_S)
    region.restart(0)
    healthy = wait_until(lambda: _answers(region.ports[0]), RECOVERY_TIMEOUT_S)
    recovery = None if healthy is None else time.perf_counter() - killed
    time.sleep(max(0.0, hold_s - (time.perf_counter() - killed)))
    return {"recovery_s": _round(recovery), "recovered_when": "the killed process answers /healthz"}


def postgres(region: Region, traffic: Traffic, hold_s: float) -> dict[str, Any]:
    """Stop PostgreSQL for `hold_s`, start it again; time until the outage's records land."""
    region.pg.stop("immediate")
    time.sleep(hold_s)
    region.pg.start()
    back = time.perf_counter()
    traffic.phase = "postgres: recovering"
    acked = [
        rid for rid, phase in traffic.tally.acked["recommendations"].items() if phase == "postgres"
    ]

    def landed() -> bool:
        try:
            rows = region_sql(
                region, "SELECT count(*) FROM served_requests WHERE request_id = ANY(%s)", acked
            )
        except Exception:
            return False
        return int(rows[0][0]) == len(acked)

    done = wait_until(landed, RECOVERY_TIMEOUT_S, step_s=0.25)
    return {
        "recovery_s": _round(done if done is None else time.perf_counter() - back),
        "recovered_when": "every served record acknowledged during the outage is in the database",
        "acknowledged_during_outage": len(acked),
    }


def redis(region: Region, traffic: Traffic, hold_s: float) -> dict[str, Any]:
    """Kill Redis for `hold_s`, start it again (empty); time until answers are whole again."""
    region.redis.kill()
    time.sleep(hold_s)
    region.redis.start()
    back = time.perf_counter()
    traffic.phase = "redis: recovering"
    since = time.monotonic()

    def whole() -> bool:
        recent = traffic.last("recommendations", since)[-CLEAN_RUN:]
        return len(recent) == CLEAN_RUN and all(o.status == 200 and not o.degraded for o in recent)

    done = wait_until(whole, RECOVERY_TIMEOUT_S, step_s=0.1)
    return {
        "recovery_s": _round(done if done is None else time.perf_counter() - back),
        "recovered_when": f"{CLEAN_RUN} recommendations in a row are not degraded",
    }


def disk_full(region: Region, traffic: Traffic, hold_s: float) -> dict[str, Any]:
    """Fill the artifact disk, train (must fail cleanly), free it, train; time to new model."""
    if not region.mounted:
        return {"skipped": "the artifact disk could not be mounted (a tmpfs needs root)"}
    started = time.perf_counter()
    filler = region.artifact_disk / "filler"
    filled = _fill(filler)
    live = _served_version(traffic)
    code, output = region.cli("train", "--tenant", TENANT, "--no-dp")
    after = _served_version(traffic)
    time.sleep(max(0.0, hold_s - (time.perf_counter() - started)))
    filler.unlink()
    freed = time.perf_counter()
    traffic.phase = "disk full: recovering"
    retrain, retrained = region.cli("train", "--tenant", TENANT, "--no-dp")
    done = wait_until(lambda: _served_version(traffic) not in (live, ""), RECOVERY_TIMEOUT_S)
    return {
        "filled_mb": round(filled / 2**20, 1),
        "train_while_full": {"exit_code": code, "said": _last_line(output)},
        "model_served_before": live,
        "model_served_after_failed_train": after,
        "retrain_exit_code": retrain,
        "recovery_s": _round(done if done is None else time.perf_counter() - freed),
        "recovered_when": "responses carry the model of the training run after space was freed",
        "retrain_said": _last_line(retrained) if retrain else "",
    }


def _fill(path: os.PathLike[str]) -> int:
    """Write zeros to `path` until the disk is full; bytes written."""
    written, chunk = 0, b"\0" * 2**20
    with open(path, "wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written


def _served_version(traffic: Traffic) -> str:
    """The model version of the latest successful recommendation."""
    for outcome in reversed(list(traffic.tally.outcomes)):
        if outcome.kind == "recommendations" and outcome.status == 200:
            return outcome.model_version
    return ""


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


FAULTS: dict[str, Fault] = {
    "kill -9": kill9,
    "postgres": postgres,
    "redis": redis,
    "disk full": disk_full,
}
