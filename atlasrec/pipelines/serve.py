"""Run a region's serving app under uvicorn, the process pinned to that region."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import uvicorn

from atlasrec.platform import Platform
from atlasrec.settings import get_settings
from atlasrec.tenancy import Region

SERVING_DB_LOCK_WAIT_S = 5.0


def serve_region(
    region: Region, *, host: str, port: int, workers: int, on_ready: Callable[[], None]
) -> None:
    """Pin the process to `region`, migrate, then serve until stopped.

    `on_ready` runs once the settings are checked, before uvicorn starts.
    """
    os.environ["ATLASREC_REGION"] = region.value  # workers inherit the pin
    # A request waits a bounded time for a locked database, then gets 503 + Retry-After.
    os.environ.setdefault("ATLASREC_DB_LOCK_WAIT_S", str(SERVING_DB_LOCK_WAIT_S))
    get_settings.cache_clear()
    Platform().close()  # fail fast on bad settings, and migrate before workers start
    metrics_dir = None
    if workers > 1:  # /metrics then aggregates every worker's values
        metrics_dir = tempfile.mkdtemp(prefix="atlasrec-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    on_ready()
    try:
        uvicorn.run(
            "serving.app:app_from_settings",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http="httptools",
            loop="uvloop",
            log_level="warning",
            access_log=False,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
