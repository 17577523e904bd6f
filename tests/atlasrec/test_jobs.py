"""Training as a Celery task on the real Redis broker, with a real worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from atlasrec.errors import UnknownTenantError
from atlasrec.jobs import JobError, run_train
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope
from tests.utils.factories import seed_music_tenant

REDIS_URL = os.environ.get("ATLASREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BROKER = REDIS_URL.rsplit("/", 1)[0] + "/14"
pytestmark = pytest.mark.redis


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[Settings, subprocess.Popen[str]]]:
    redis.Redis.from_url(BROKER).flushdb()  # db 14 belongs to these tests
    settings = Settings(home=tmp_path / "home", broker_url=BROKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLASREC_")}
    env |= {"ATLASREC_HOME": str(settings.home), "ATLASREC_BROKER_URL": BROKER}
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "atlasrec.jobs",
            "worker",
            "--pool=solo",
            "-n",
            f"test-{uuid.uuid4().hex[:8]}@%h",
            "--loglevel=INFO",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield settings, proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_train_runs_on_the_worker(
    worker: tuple[Settings, subprocess.Popen[str]], tmp_path: Path
) -> None:
    settings, proc = worker
    platform = Platform(settings)
    try:
        seed_music_tenant(platform, "shop", Region.US, tmp_path)
        started = time.monotonic()
        done = run_train(platform, "shop", actor="t", epsilon=None, no_dp=True, timeout_s=240)
        assert done["ok"] and done["worker"].endswith(f":{proc.pid}")  # not this process
        assert time.monotonic() - started < 240
        artifact = platform.plane(Region.US).artifacts.latest(
            Scope("shop", Region.US), "two-tower", actor="t"
        )
        assert artifact is not None and artifact.version == done["model_version"]
        with pytest.raises(
            JobError, match="not both"
        ):  # a worker-side error comes back as one line
            run_train(platform, "shop", actor="t", epsilon=1.0, no_dp=True, timeout_s=120)
        with pytest.raises(UnknownTenantError):  # refused before anything is queued
            run_train(platform, "ghost", actor="t", epsilon=None, no_dp=True, timeout_s=5)
    finally:
        platform.close()


def test_beat_schedules_federation_and_stale_model_checks_per_region_on_its_own_queue() -> None:
    from atlasrec.jobs import make_celery

    settings = Settings(
        broker_url=BROKER, federation_interval_s=3600, federation_rounds=3, retrain_check_s=600
    )
    schedule = make_celery(settings).conf.beat_schedule
    by_task: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for entry in schedule.values():
        by_task.setdefault(entry["task"], []).append(entry)
        assert entry["options"]["queue"] == f"atlasrec-{entry['args'][0]}"
    assert set(by_task) == {"atlasrec.federate", "atlasrec.retrain_stale"}
    for task, every in (("atlasrec.federate", 3600), ("atlasrec.retrain_stale", 600)):
        assert {e["args"][0] for e in by_task[task]} == {r.value for r in Region}
        assert all(e["schedule"] == every for e in by_task[task])
    assert all(e["args"][1] == 3 for e in by_task["atlasrec.federate"])
