"""Freshness: from an event's 202 to a recommendation reflecting it, and to the offline store.

A probe is a new user's first event (one item). Recommendation freshness: the time from
the 202 until `POST /v1/recommendations` for that user answers `cold_start: false` without
the item (the pipeline excludes what the user has seen), polled back to back; it includes
one recommendation request. Offline freshness: the time from the 202 until the region's
`offline` consumer has acknowledged everything (lag 0: the event is in Parquet), polled
every 5 ms from this process. Probes are sequential, on an otherwise idle server.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import httpx

from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from benchmarks.events.config import REGION
from benchmarks.events.consume import settings
from benchmarks.events.processes import Home
from benchmarks.stats import p50_p99

GIVE_UP_S = 10.0


def _reflected(http: httpx.Client, user: str, item: str) -> bool:
    answer = http.post("/v1/recommendations", json={"user_id": user, "k": 10}).json()
    return not answer["cold_start"] and item not in {i["item_id"] for i in answer["items"]}


def probes(
    home: Home, port: int, items: list[str], n: int, *, offline: bool, seed: int = 0
) -> dict[str, Any]:
    """`n` probes; p50/p99 of ack latency, recommendation and (if `offline`) offline freshness."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {home.api_key}"}
    platform = Platform(settings(home)) if offline else None
    lag = platform.plane(Region(REGION)).events.consumer("offline").lag if platform else None
    acks: list[float] = []
    recs: list[float] = []
    stored: list[float] = []
    missed = 0
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as http:
            for _ in range(n):
                user, item = f"fresh-{uuid.uuid4().hex[:12]}", rng.choice(items)
                sent = time.perf_counter()
                answer = http.post(
                    "/v1/events", json={"events": [{"user_id": user, "item_id": item}]}
                )
                acked = time.perf_counter()
                if answer.status_code != 202:
                    missed += 1
                    continue
                acks.append((acked - sent) * 1000)
                while not _reflected(http, user, item):
                    if time.perf_counter() - acked > GIVE_UP_S:
                        missed += 1
                        break
                else:
                    recs.append((time.perf_counter() - acked) * 1000)
                if lag is not None:
                    while lag().total:
                        if time.perf_counter() - acked > GIVE_UP_S:
                            missed += 1
                            break
                        time.sleep(0.005)
                    else:
                        stored.append((time.perf_counter() - acked) * 1000)
                time.sleep(0.05)
    finally:
        if platform is not None:
            platform.close()
    out: dict[str, Any] = {
        "probes": n,
        "missed": missed,
        "ack_ms": p50_p99(acks),
        "recommendation_ms": p50_p99(recs),
    }
    if offline:
        out["offline_store_ms"] = p50_p99(stored)
    return out
