"""Serving benchmark: latency and throughput of the regional serving app over HTTP.

    scripts/bench serving [--quick]

Sets up, in a temporary ATLASREC_HOME, the largest MovieLens tenant of the demo mix (trained
without DP, few epochs) and a synthetic retail tenant with a 100,000-item catalog, starts the
real server (`atlasrec serve`, one worker) against the real Redis (db 11, flushed first), and
measures, side by side in one run: open-loop constant-rate load, closed-loop maximum
throughput, and the same load on `GET /healthz` (the framework floor). Then the serving path
is profiled in-process with cProfile.

The synthetic tenant's item embeddings are NOT computed by MiniLM: deterministic pseudo-random
unit vectors (clustered by category) are written into `item_embeddings` with the right
`content_sha`, so the server treats them as cached. The benchmark measures serving, not
embedding. That tenant is not trained: it is served on the content-embedding path
(`model_version` "content-embeddings", default ranker), the path of every new tenant.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import hashlib
import json
import os
import platform as host
import pstats
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REGION = "eu"
REDIS_URL = "redis://127.0.0.1:6379/11"
"""A dedicated Redis db: flushed at start and at the end."""
PORT_BASE = 18080
ACTOR = "bench:serving"
SYNTHETIC_ITEMS = 100_000
ML_EPOCHS = 3
RATES = (150.0, 300.0)
CONCURRENCY = 16
BODIES = 2_000
TARGET_P99_MS = 25.0
TARGET_RATE = 300.0
COUNTRIES = ("DE", "FR", "GB", "US", "IN", "BR", "SG")
STAGE_ROOTS: dict[str, tuple[tuple[str, str], ...]] = {
    "features": (("serving/online.py", "recent"),),
    "retrieval": (
        ("serving/state.py", "user_vector"),
        ("serving/pipeline.py", "_popular_positions"),
        ("serving/pipeline.py", "_candidates"),
    ),
    "ranking": (
        ("serving/pipeline.py", "_rank"),
        ("serving/pipeline.py", "_popularity_scores"),
    ),
    "reranking": (
        ("serving/pipeline.py", "_relevance"),
        ("serving/pipeline.py", "_rerank"),
    ),
    "policy": (
        ("serving/pipeline.py", "_policy_filter"),
        ("serving/pipeline.py", "_backfill"),
    ),
}
"""The functions each stage of `serving.pipeline.recommend` spends its time in."""


@dataclass
class TenantSetup:
    """A benchmark tenant: its key, and what realistic request bodies are drawn from."""

    tenant_id: str
    kind: str
    api_key: str
    users: list[str]
    items: list[str]
    categories: list[str]
    n_items: int
    n_users: int
    n_interactions: int
    model_version: str = ""
    setup_s: dict[str, float] = field(default_factory=dict)


# setup ----------------------------------------------------------------------------------------


def _csv_column(path: Path, column: str) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [row[column] for row in csv.DictReader(fh)]


def _describe(
    tenant_id: str, kind: str, api_key: str, items_csv: Path, interactions_csv: Path
) -> TenantSetup:
    users = _csv_column(interactions_csv, "user_id")
    categories = sorted({c for c in _csv_column(items_csv, "category") if c})
    items = _csv_column(items_csv, "item_id")
    return TenantSetup(
        tenant_id=tenant_id,
        kind=kind,
        api_key=api_key,
        users=sorted(set(users)),
        items=items,
        categories=categories,
        n_items=len(items),
        n_users=len(set(users)),
        n_interactions=len(users),
    )


def _create_and_ingest(platform: Any, tenant_id: str, items: Path, interactions: Path) -> str:
    """Create a solo tenant in REGION and ingest its files; return its API key."""
    from atlasrec.ingest import ingest
    from atlasrec.tenancy import Region, SharingPolicy

    region = Region(REGION)
    _, issued = platform.create_tenant(
        tenant_id, region=region, sharing=SharingPolicy.SOLO, actor=ACTOR
    )
    ingest(
        platform.plane(region),
        platform.scope(tenant_id),
        secret=platform.secret,
        actor=ACTOR,
        items=items,
        interactions=interactions,
    )
    key: str = issued.api_key
    return key


def setup_movielens(platform: Any, work: Path, epochs: int) -> TenantSetup:
    """The largest MovieLens tenant of the demo mix, trained without DP for `epochs` epochs."""
    from atlasrec.datasets import build_movielens_tenant_mix
    from atlasrec.models.two_tower import TwoTowerConfig
    from atlasrec.pipelines.train import train_tenant

    started = time.perf_counter()
    mix = build_movielens_tenant_mix(work / "movielens")
    ds = max(mix, key=lambda d: d.n_interactions)
    key = _create_and_ingest(platform, ds.tenant_id, ds.items_csv, ds.interactions_csv)
    ingested = time.perf_counter()
    result = train_tenant(
        platform, ds.tenant_id, actor=ACTOR, no_dp=True, config=TwoTowerConfig(epochs=epochs)
    )
    setup = _describe(ds.tenant_id, "movielens", key, ds.items_csv, ds.interactions_csv)
    setup.model_version = result.model_version
    setup.setup_s = {
        "ingest": round(ingested - started, 1),
        "embed_and_train": round(time.perf_counter() - ingested, 1),
    }
    return setup


def _add_policies(items_csv: Path, seed: int) -> dict[str, int]:
    """Give a share of the items policy attributes (what the policy filter enforces)."""
    rng = random.Random(seed)
    with items_csv.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    extra = ("min_age", "countries", "excluded_countries", "in_stock", "boost", "bury")
    counts = dict.fromkeys(extra, 0)
    for row in rows:
        draw = rng.random()
        for name in extra:
            row[name] = ""
        if draw < 0.05:
            row["min_age"] = "18"
        elif draw < 0.08:
            row["countries"] = "DE FR"
        elif draw < 0.10:
            row["excluded_countries"] = "US"
        elif draw < 0.12:
            row["in_stock"] = "false"
        elif draw < 0.13:
            row["boost"] = "1.5"
        elif draw < 0.14:
            row["bury"] = "true"
        else:
            continue
        counts[next(n for n in extra if row[n])] += 1
    with items_csv.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return counts


def write_fake_embeddings(platform: Any, tenant_id: str, seed: int) -> int:
    """Cache deterministic pseudo-random unit vectors as the tenant's MiniLM embeddings.

    Each vector is its category's centroid plus noise, normalised; `content_sha` is that of
    `item_text(title, category, description)`, so the serving app treats them as cached.
    """
    from sqlalchemy import insert
    from sqlmodel import col, select

    from atlasrec.dataplane.tables import Item, ItemEmbedding
    from atlasrec.models.text import DIM, ENCODER, item_text
    from atlasrec.tenancy import Region

    plane = platform.plane(Region(REGION))
    scope = platform.scope(tenant_id)
    with plane.session(scope, actor=ACTOR, action="bench.read") as session:
        items = session.execute(
            select(Item.item_id, Item.title, Item.category, Item.description).order_by(
                col(Item.item_id)
            )
        ).all()
    rng = np.random.default_rng(seed)
    centroids: dict[str | None, np.ndarray] = {}
    for _, _, category, _ in items:
        if category not in centroids:
            crc = zlib.crc32(str(category).encode())
            centroids[category] = np.random.default_rng([seed, crc]).standard_normal(DIM)
    noise = rng.standard_normal((len(items), DIM))
    vectors = np.stack([centroids[c] for _, _, c, _ in items]) * 0.8 + noise
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    rows = [
        {
            "tenant_id": tenant_id,
            "item_id": item_id,
            "encoder": ENCODER,
            "content_sha": hashlib.sha256(
                item_text(title, category, description).encode()
            ).hexdigest(),
            "vector": vectors[n].tobytes(),
        }
        for n, (item_id, title, category, description) in enumerate(items)
    ]
    with plane.session(scope, actor=ACTOR, action="bench.embeddings") as session:
        for start in range(0, len(rows), 5_000):
            session.execute(insert(ItemEmbedding), rows[start : start + 5_000])
    return len(rows)


def setup_synthetic(platform: Any, work: Path, n_users: int, n_interactions: int) -> TenantSetup:
    """A synthetic retail tenant with a 100K-item catalog, policies, and fake embeddings."""
    from atlasrec.datasets.synthetic import SyntheticTenantSpec, generate_synthetic_tenant
    from atlasrec.tenancy import Region, SharingPolicy

    started = time.perf_counter()
    spec = SyntheticTenantSpec(
        "shop-100k",
        Region(REGION),
        SharingPolicy.SOLO,
        n_items=SYNTHETIC_ITEMS,
        n_users=n_users,
        n_interactions=n_interactions,
        seed=7,
    )
    ds = generate_synthetic_tenant(spec, work / "synthetic")
    policies = _add_policies(ds.items_csv, seed=7)
    generated = time.perf_counter()
    key = _create_and_ingest(platform, ds.tenant_id, ds.items_csv, ds.interactions_csv)
    ingested = time.perf_counter()
    write_fake_embeddings(platform, ds.tenant_id, seed=7)
    setup = _describe(ds.tenant_id, "synthetic", key, ds.items_csv, ds.interactions_csv)
    setup.model_version = "content-embeddings"
    setup.setup_s = {
        "generate": round(generated - started, 1),
        "ingest": round(ingested - generated, 1),
        "fake_embeddings": round(time.perf_counter() - ingested, 1),
        **{f"items_with_{k}": v for k, v in policies.items()},
    }
    return setup


# request bodies -------------------------------------------------------------------------------


def request_bodies(setup: TenantSetup, n: int, seed: int) -> list[dict[str, Any]]:
    """Realistic request bodies: mostly known users, some unknown or anonymous sessions.

    70% known users, 20% unknown users with 2-8 recent items, 10% anonymous with recent
    items; independently 40% with country and age, 20% with a category filter (1-2
    categories), 10% excluding 1-5 items; k is 10 (20 for 10% of requests).
    """
    rng = random.Random(seed)
    bodies = []
    for n_body in range(n):
        body: dict[str, Any] = {"k": 20 if rng.random() < 0.1 else 10}
        context: dict[str, Any] = {}
        who = rng.random()
        if who < 0.7:
            body["user_id"] = rng.choice(setup.users)
        else:
            if who < 0.9:
                body["user_id"] = f"visitor-{seed}-{n_body}"
            context["recent_items"] = rng.sample(setup.items, rng.randint(2, 8))
        if rng.random() < 0.4:
            context["country"] = rng.choice(COUNTRIES)
            context["user_age"] = rng.randint(14, 70)
        filters: dict[str, Any] = {}
        if setup.categories and rng.random() < 0.2:
            filters["categories"] = rng.sample(setup.categories, min(len(setup.categories), 2))[
                : rng.randint(1, 2)
            ]
        if rng.random() < 0.1:
            filters["exclude_items"] = rng.sample(setup.items, rng.randint(1, 5))
        if context:
            body["context"] = context
        if filters:
            body["filters"] = filters
        bodies.append(body)
    return bodies


def raw_post(port: int, path: str, api_key: str, body: dict[str, Any]) -> bytes:
    """An HTTP/1.1 keep-alive POST request, ready to write."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def raw_get(port: int, path: str) -> bytes:
    """An HTTP/1.1 keep-alive GET request, ready to write."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


# load generator -------------------------------------------------------------------------------


class Client:
    """A minimal keep-alive HTTP/1.1 client pool on asyncio streams (low client CPU)."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.size = size
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._open = 0
        self._slot = asyncio.Semaphore(size)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request; (status, body). Waits for a free connection when all are busy."""
        async with self._slot:
            if self._idle.empty():
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                self._open += 1
            else:
                reader, writer = self._idle.get_nowait()
            try:
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
                length = 0
                close = False
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "connection" and value.strip().lower() == "close":
                        close = True
                body = await reader.readexactly(length)
            except BaseException:
                writer.close()
                self._open -= 1
                raise
            if close:
                writer.close()
                self._open -= 1
            else:
                self._idle.put_nowait((reader, writer))
            return status, body

    def close(self) -> None:
        """Close every idle connection."""
        while not self._idle.empty():
            self._idle.get_nowait()[1].close()


@dataclass
class Sample:
    """One request's outcome."""

    latency_ms: float
    status: int
    timings: dict[str, float] | None = None
    degraded: bool = False
    lag_ms: float = 0.0


def _parse(status: int, body: bytes, timed: bool) -> tuple[dict[str, float] | None, bool]:
    if not timed or status != 200:
        return None, False
    data = json.loads(body)
    return data["timings_ms"], bool(data["degraded"])


async def _one(client: Client, raw: bytes, timed: bool, due: float) -> Sample:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        status, body = await asyncio.wait_for(client.request(raw), timeout=10.0)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
        return Sample((loop.time() - due) * 1000, 0, lag_ms=(started - due) * 1000)
    timings, degraded = _parse(status, body, timed)
    done = loop.time()
    return Sample((done - due) * 1000, status, timings, degraded, (started - due) * 1000)


async def open_loop(
    port: int, requests: Sequence[bytes], rate: float, duration_s: float, timed: bool
) -> tuple[list[Sample], float]:
    """Send at a constant `rate` regardless of responses; latency counts from the due time.

    Counting from when a request was due (not when it was sent) keeps client-side or
    connection-pool delays in the figures (no coordinated omission).
    """
    client = Client(port, 256)
    loop = asyncio.get_running_loop()
    n = int(rate * duration_s)
    start = loop.time() + 0.05
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(client, requests[i % len(requests)], timed, due)))
    samples = list(await asyncio.gather(*tasks))
    elapsed = loop.time() - start
    client.close()
    return samples, elapsed


async def closed_loop(
    port: int, requests: Sequence[bytes], concurrency: int, duration_s: float, timed: bool
) -> tuple[list[Sample], float]:
    """`concurrency` connections, each sending its next request as soon as one returns."""
    client = Client(port, concurrency)
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + duration_s
    samples: list[Sample] = []

    async def worker(w: int) -> None:
        i = w
        while loop.time() < end:
            samples.append(await _one(client, requests[i % len(requests)], timed, loop.time()))
            i += concurrency

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = loop.time() - start
    client.close()
    return samples, elapsed


def _pct(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def summarise(samples: Sequence[Sample], elapsed_s: float, offered: float | None) -> dict[str, Any]:
    """Latency percentiles, achieved rate, errors, server stage timings of one run."""
    ok = [s for s in samples if 200 <= s.status < 300]
    latencies = [s.latency_ms for s in samples]
    out: dict[str, Any] = {
        "offered_rps": offered,
        "requests": len(samples),
        "achieved_rps": round(len(ok) / elapsed_s, 1) if elapsed_s > 0 else None,
        "errors": len(samples) - len(ok),
        "error_statuses": dict(
            sorted(
                {
                    str(st): sum(1 for s in samples if s.status == st)
                    for st in {s.status for s in samples}
                    if not 200 <= st < 300
                }.items()
            )
        ),
        "p50_ms": _pct(latencies, 50),
        "p95_ms": _pct(latencies, 95),
        "p99_ms": _pct(latencies, 99),
        "max_ms": round(max(latencies), 3) if latencies else None,
        "client_lag_p99_ms": _pct([s.lag_ms for s in samples], 99),
    }
    timed = [s.timings for s in ok if s.timings is not None]
    if timed:
        out["degraded"] = sum(1 for s in ok if s.degraded)
        out["stages_ms"] = {
            stage: {
                "p50": _pct([t[stage] for t in timed], 50),
                "p99": _pct([t[stage] for t in timed], 99),
            }
            for stage in timed[0]
        }
    return out


# wrk (optional) -------------------------------------------------------------------------------


def _lua_string(text: str) -> str:
    level = "=" * 3
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def wrk_script(path: Path, api_key: str, bodies: Sequence[dict[str, Any]]) -> Path:
    """A wrk Lua script that cycles through `bodies` as POST /v1/recommendations."""
    entries = ",\n".join(_lua_string(json.dumps(b, separators=(",", ":"))) for b in bodies)
    path.write_text(
        f"local bodies = {{\n{entries}\n}}\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {api_key}"\n'
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        '  return wrk.format(nil, "/v1/recommendations", nil, bodies[(n % #bodies) + 1])\n'
        "end\n",
        encoding="utf-8",
    )
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, script: Path | None, concurrency: int, duration_s: int) -> dict[str, Any]:
    """Closed-loop max throughput with wrk (fixed connections, one thread)."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    run = subprocess.run(  # noqa: S603 - fixed arguments
        [*command, url], capture_output=True, text=True, check=False, timeout=duration_s + 60
    )
    text = run.stdout
    out: dict[str, Any] = {"connections": concurrency, "duration_s": duration_s}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["requests_per_s"] = float(rate.group(1)) if rate else None
    total = re.search(r"(\d+) requests in", text)
    out["requests"] = int(total.group(1)) if total else None
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: (.*)", text)
    out["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    out["socket_errors"] = sock.group(1) if sock else None
    for q, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        out[f"p{q}_ms"] = round(float(value) * _UNITS[unit], 3)
    if rate is None:
        out["error"] = (run.stderr or text)[-500:]
    return out


# the server -----------------------------------------------------------------------------------


def free_port(start: int = PORT_BASE) -> int:
    """The first port from `start` that nothing listens on."""
    for port in range(start, start + 100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError(f"no free port in {start}..{start + 99}")


@contextmanager
def server(
    env: dict[str, str], port: int, log: Path, timeout_s: float, workers: int = 1
) -> Iterator[tuple[float, int]]:
    """`atlasrec serve` as a subprocess; yields (seconds until /healthz answered, its pid)."""
    exe = Path(sys.executable).with_name("atlasrec")
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [
                *(str(exe), "serve", "--region", REGION),
                *("--port", str(port), "--workers", str(workers)),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {proc.returncode}: {log.read_text()[-2000:]}"
                    )
                if time.perf_counter() - started > timeout_s:
                    raise RuntimeError(f"server not healthy after {timeout_s:.0f} s")
                status = _healthz(port)
                if status == 200:
                    break
                time.sleep(0.5)
            yield time.perf_counter() - started, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _healthz(port: int) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(
                raw_get(port, "/healthz").replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
            )
            head = conn.recv(64)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def flush_redis() -> None:
    """Empty the benchmark's Redis db."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


# in-process profile ---------------------------------------------------------------------------


def _queries(runtime: Any, bodies: Sequence[dict[str, Any]]) -> list[Any]:
    from serving.pipeline import Query

    out = []
    for b in bodies:
        context, filters = b.get("context", {}), b.get("filters", {})
        user = b.get("user_id")
        out.append(
            Query(
                user_key=None if user is None else runtime.pseudonymise(user),
                k=b["k"],
                recent_items=tuple(context.get("recent_items", ())),
                user_age=context.get("user_age"),
                country=context.get("country"),
                categories=None
                if "categories" not in filters
                else frozenset(filters["categories"]),
                exclude_items=frozenset(filters.get("exclude_items", ())),
            )
        )
    return out


def _func_name(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    for marker in ("/site-packages/", "/work/main/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    return f"{filename}:{line}({name})" if line else name


def _stage_profile(
    stats: dict[Any, Any], per: Callable[[float], float], top: int
) -> dict[str, Any]:
    """Per stage: its functions' cumulative time per request, and their costliest callees."""
    out: dict[str, Any] = {}
    for stage, roots in STAGE_ROOTS.items():
        entries = []
        for suffix, name in roots:
            key = next((k for k in stats if k[0].endswith(suffix) and k[2] == name), None)
            if key is None:
                continue
            calls, cum = stats[key][1], stats[key][3]
            callees = sorted(
                (
                    (callee, info[3])
                    for callee, (*_, callers) in stats.items()
                    for caller, info in callers.items()
                    if caller == key
                ),
                key=lambda c: -c[1],
            )[:top]
            entries.append(
                {
                    "function": _func_name(key),
                    "calls": calls,
                    "cum_ms_per_request": round(per(cum), 4),
                    "top_callees": [
                        {"function": _func_name(c), "cum_ms_per_request": round(per(t), 4)}
                        for c, t in callees
                    ],
                }
            )
        out[stage] = entries
    return out


@contextmanager
def _in_process(platform: Any, tenant_id: str) -> Iterator[tuple[Any, float]]:
    """The tenant's serving runtime on the benchmark's Redis, and how long it took to load."""
    from atlasrec.online_store import OnlineStore, make_backend
    from atlasrec.tenancy import Region
    from serving.runtime import RegionRuntime

    region = Region(REGION)
    backend = make_backend(REDIS_URL, timeout_s=platform.settings.serving_redis_timeout_s)
    try:
        online = OnlineStore(region, backend, platform.plane(region).boundary)
        runtime = RegionRuntime(platform, region, online=online)
        loaded = time.perf_counter()
        tenant = runtime.tenant(platform.control.get_tenant(tenant_id))
        yield tenant, time.perf_counter() - loaded
    finally:
        backend.close()


def _stage_ms(served: Sequence[Any]) -> dict[str, dict[str, float | None]]:
    """p50 / p99 of each stage's and the total's milliseconds over `Served` responses."""
    from serving.pipeline import STAGES

    return {
        stage: {
            "p50": _pct([s.timings_ms[stage] for s in served], 50),
            "p99": _pct([s.timings_ms[stage] for s in served], 99),
        }
        for stage in (*STAGES, "total")
    }


def profile_tenant(
    platform: Any, tenant_id: str, bodies: Sequence[dict[str, Any]], n: int
) -> dict[str, Any]:
    """Run `recommend` in-process on the loaded tenant: plain timings, then under cProfile."""
    from serving.pipeline import recommend

    with _in_process(platform, tenant_id) as (tenant, load_s):
        budgets = dict(platform.settings.serving_budget_ms)
        queries = _queries(tenant, bodies)
        for q in queries[:200]:  # warm up
            recommend(tenant.state, tenant.online, q, budgets)
        plain = [
            recommend(tenant.state, tenant.online, queries[i % len(queries)], budgets)
            for i in range(n)
        ]
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for i in range(n):
            recommend(tenant.state, tenant.online, queries[i % len(queries)], budgets)
        profiler.disable()
        profiled_s = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def per(seconds: float) -> float:
        return seconds * 1000 / n

    by_cum = sorted(stats.items(), key=lambda kv: -kv[1][3])
    by_own = sorted(stats.items(), key=lambda kv: -kv[1][2])
    return {
        "requests": n,
        "load_s": round(load_s, 1),
        "index": tenant.state.index.kind,
        "model_version": tenant.state.model_version,
        "unprofiled_ms": _stage_ms(plain),
        "degraded": sum(1 for s in plain if s.degraded),
        "profiled_ms_per_request": round(per(profiled_s), 3),
        "stages": _stage_profile(stats, per, 6),
        "top_cumulative": [
            {"function": _func_name(k), "cum_ms_per_request": round(per(v[3]), 4)}
            for k, v in by_cum[:25]
        ],
        "top_own_time": [
            {"function": _func_name(k), "own_ms_per_request": round(per(v[2]), 4)}
            for k, v in by_own[:15]
        ],
    }


def compare_intents(
    platform: Any, tenant_id: str, bodies: Sequence[dict[str, Any]], n: int
) -> dict[str, Any]:
    """The `next` and `profile` intents in-process, each request both ways, order alternating.

    Only requests with a user id (the profile pools a stored history). Stage timings (ms,
    p50 / p99) per intent, how many `profile` requests were served so, and the ratio of the
    medians of the totals.
    """
    from dataclasses import replace

    from serving.pipeline import recommend

    served: dict[str, list[Any]] = {"next": [], "profile": []}
    with _in_process(platform, tenant_id) as (tenant, _):
        budgets = dict(platform.settings.serving_budget_ms)
        queries = [q for q in _queries(tenant, bodies) if q.user_key is not None]
        for i in range(n + 200):  # the first 200: warm-up
            q = queries[i % len(queries)]
            pair = ("next", "profile") if i % 2 else ("profile", "next")
            for intent in pair:
                out = recommend(tenant.state, tenant.online, replace(q, intent=intent), budgets)
                if i >= 200:
                    served[intent].append(out)
    stats = {intent: _stage_ms(runs) for intent, runs in served.items()}
    p50 = {intent: stats[intent]["total"]["p50"] or 0.0 for intent in stats}
    return {
        "requests": n,
        "ms": stats,
        "profile_served_as_profile": sum(s.intent == "profile" for s in served["profile"]),
        "total_p50_ratio_profile_to_next": round(p50["profile"] / p50["next"], 3),
    }


# the run --------------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn's worker processes with --workers N)."""
    out = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            out += _tree(int(child))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants, all threads (Linux /proc)."""
    total = 0.0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _accounted(
    pid: int, load: Coroutine[Any, Any, tuple[list[Sample], float]], offered: float | None
) -> dict[str, Any]:
    """Run `load`; its summary with the server's CPU time per request and the machine load."""
    loadavg = os.getloadavg()[0]
    server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
    samples, elapsed = asyncio.run(load)
    server_cpu, client_cpu = cpu_seconds(pid) - server_cpu, time.process_time() - client_cpu
    out = summarise(samples, elapsed, offered)
    ok = max(1, len(samples) - out["errors"])
    out["server_cpu_ms_per_request"] = round(server_cpu * 1000 / ok, 3)
    out["server_cores_used"] = round(server_cpu / elapsed, 2)
    out["client_cores_used"] = round(client_cpu / elapsed, 2)
    out["loadavg_1m_before"] = round(loadavg, 2)
    return out


def measure(
    port: int,
    pid: int,
    targets: dict[str, tuple[list[bytes], bool]],
    rates: Sequence[float],
    duration_s: float,
    concurrency: int,
) -> dict[str, Any]:
    """One repetition: each rate, then closed loop, each against every target in turn."""
    out: dict[str, Any] = {name: {} for name in targets}
    for rate in rates:
        for name, (requests, timed) in targets.items():
            settle(port)
            out[name][f"open_{rate:g}"] = _accounted(
                pid, open_loop(port, requests, rate, duration_s, timed), rate
            )
            print(f"  {name} @ {rate:g}/s: {_short(out[name][f'open_{rate:g}'])}", flush=True)
    for name, (requests, timed) in targets.items():
        settle(port)
        out[name]["closed"] = {
            "connections": concurrency,
            **_accounted(pid, closed_loop(port, requests, concurrency, duration_s, timed), None),
        }
        print(f"  {name} closed x{concurrency}: {_short(out[name]['closed'])}", flush=True)
    return out


def settle(port: int, pause_s: float = 2.0) -> None:
    """Let the server drain what an earlier (possibly overloaded) run left queued."""
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        if _healthz(port) == 200 and time.perf_counter() - started < 0.05:
            break
        time.sleep(0.5)
    time.sleep(pause_s)


def py_spy_profile(
    py_spy: str, pid: int, port: int, requests: Sequence[bytes], concurrency: int, seconds: int
) -> dict[str, Any]:
    """Sample the server (threads holding the GIL) under closed-loop load with py-spy.

    Shares are of GIL-holding samples: the server is one Python process, so this is where its
    CPU time goes, HTTP layer and background threads included.
    """
    folded = Path(tempfile.mkdtemp(prefix="atlasrec-pyspy-")) / "stacks.txt"
    try:
        settle(port)
        spy = subprocess.Popen(  # noqa: S603 - fixed arguments
            [
                *(py_spy, "record", "--pid", str(pid), "--gil", "--rate", "250", "--subprocesses"),
                *("--format", "raw", "--duration", str(seconds), "--output", str(folded)),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        samples, elapsed = asyncio.run(closed_loop(port, requests, concurrency, seconds, True))
        _, err = spy.communicate(timeout=seconds + 60)
        if not folded.exists():
            return {"error": err[-500:]}
        stacks: list[tuple[set[str], int]] = []
        for line in folded.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if count.isdigit():
                stacks.append((set(stack.split(";")), int(count)))
    finally:
        shutil.rmtree(folded.parent, ignore_errors=True)
    total = sum(c for _, c in stacks)
    inclusive: dict[str, int] = {}
    for frames, n in stacks:
        for frame in frames:
            inclusive[frame] = inclusive.get(frame, 0) + n
    buckets: dict[str, tuple[str | None, str]] = {
        "pipeline (serving.pipeline.recommend)": ("recommend", "serving/pipeline.py"),
        "recorder thread (served requests to the region DB)": (None, "serving/recorder.py"),
        "response validation/serialisation (fastapi)": ("serialize_response", "fastapi/"),
        "request body validation (fastapi)": ("request_body_to_args", "fastapi/"),
        "authentication (API key -> tenant)": ("authenticated", "serving/app.py"),
        "route handler (all of recommendations())": ("recommendations", "serving/app.py"),
        "prometheus metrics": (None, "prometheus_client/"),
        "serving refresher thread": ("refresh_all", "serving/runtime.py"),
        "uvicorn/h11 protocol": (None, "uvicorn/"),
    }
    return {
        "samples": total,
        "load": summarise(samples, elapsed, None),
        "share": {
            label: round(
                sum(c for frames, c in stacks if any(_matches(f, *match) for f in frames)) / total,
                3,
            )
            if total
            else None
            for label, match in buckets.items()
        },
        "top_inclusive": [
            {"frame": _frame(f), "share": round(c / total, 3)}
            for f, c in sorted(inclusive.items(), key=lambda kv: -kv[1])[:30]
        ],
    }


def _frame(frame: str) -> str:
    """`name (path:line)` with the path shortened to its package-relative part."""
    name, _, where = frame.partition(" (")
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in where:
            return f"{name} ({where.split(marker, 1)[1]}"
    return frame


def _matches(frame: str, function: str | None, fragment: str) -> bool:
    name, _, where = frame.partition(" (")
    named = function is None or name.rsplit(".", 1)[-1] == function
    return named and fragment in where


def _short(run: dict[str, Any]) -> str:
    return (
        f"p50 {run['p50_ms']} p95 {run['p95_ms']} p99 {run['p99_ms']} ms, "
        f"{run['achieved_rps']} req/s, {run['errors']} errors, "
        f"server CPU {run.get('server_cpu_ms_per_request')} ms/req, "
        f"load {run.get('loadavg_1m_before')}"
    )


def median_of(repeats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise median over repetitions of the numeric figures (errors: summed)."""
    first = repeats[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        values = [r.get(key) for r in repeats]
        if isinstance(value, dict):
            out[key] = median_of([v for v in values if isinstance(v, dict)])
        elif key in ("errors", "requests", "degraded", "non_2xx"):
            out[key] = sum(int(v) for v in values if v is not None)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers = [float(v) for v in values if isinstance(v, int | float)]
            out[key] = round(statistics.median(numbers), 3) if numbers else None
        else:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, serve, load, profile; the results."""
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="atlasrec-bench-serving-"))
    env_keys = ("ATLASREC_HOME", "ATLASREC_REDIS_URL", "ATLASREC_REGION")
    saved = {k: os.environ.get(k) for k in env_keys}
    os.environ["ATLASREC_HOME"] = str(home / "home")
    os.environ["ATLASREC_REDIS_URL"] = REDIS_URL
    os.environ.pop("ATLASREC_REGION", None)
    from atlasrec.platform import Platform
    from atlasrec.settings import get_settings

    get_settings.cache_clear()
    results: dict[str, Any] = {}
    try:
        flush_redis()
        platform = Platform()
        print("setting up tenants ...", flush=True)
        tenants = [
            setup_movielens(platform, home / "data", args.epochs),
            setup_synthetic(platform, home / "data", args.users, args.interactions),
        ]
        for t in tenants:
            print(
                f"  {t.tenant_id}: {t.n_items} items, {t.n_users} users, "
                f"{t.n_interactions} interactions, setup {t.setup_s}",
                flush=True,
            )
        port = free_port()
        env = {**os.environ, "ATLASREC_REGION": REGION}
        env.update(dict(item.split("=", 1) for item in args.server_env))
        bodies = {t.tenant_id: request_bodies(t, BODIES, seed=n) for n, t in enumerate(tenants)}
        targets: dict[str, tuple[list[bytes], bool]] = {
            "healthz": ([raw_get(port, "/healthz")], False)
        }
        for t in tenants:
            targets[t.tenant_id] = (
                [raw_post(port, "/v1/recommendations", t.api_key, b) for b in bodies[t.tenant_id]],
                True,
            )
        print(f"starting the server on port {port} ...", flush=True)
        with server(env, port, home / "server.log", args.start_timeout, args.workers) as (
            ready_s,
            pid,
        ):
            print(f"  healthy after {ready_s:.1f} s", flush=True)
            for requests, timed in targets.values():  # warm up
                asyncio.run(closed_loop(port, requests, 4, 3.0, timed))
            repeats = []
            for rep in range(args.repeats):
                print(f"repetition {rep + 1}/{args.repeats}", flush=True)
                repeats.append(
                    measure(port, pid, targets, args.rates, args.duration, args.concurrency)
                )
            wrk: dict[str, Any] = {}
            if shutil.which("wrk"):
                print("wrk closed loop ...", flush=True)
                for _ in range(args.repeats):
                    for t in tenants:
                        script = wrk_script(
                            home / f"{t.tenant_id}.lua", t.api_key, bodies[t.tenant_id][:500]
                        )
                        wrk.setdefault(t.tenant_id, []).append(
                            run_wrk(
                                f"http://127.0.0.1:{port}",
                                script,
                                args.concurrency,
                                args.wrk_duration,
                            )
                        )
                    wrk.setdefault("healthz", []).append(
                        run_wrk(
                            f"http://127.0.0.1:{port}/healthz",
                            None,
                            args.concurrency,
                            args.wrk_duration,
                        )
                    )
                for name, runs in wrk.items():
                    print(f"  {name}: {[r.get('requests_per_s') for r in runs]} req/s", flush=True)
            if args.py_spy:
                print("py-spy on the server under closed-loop load ...", flush=True)
                results["server_profile"] = {
                    t.tenant_id: py_spy_profile(
                        args.py_spy, pid, port, targets[t.tenant_id][0], args.concurrency, 10
                    )
                    for t in tenants
                }
        results["server_ready_s"] = round(ready_s, 1)
        results["tenants"] = {
            t.tenant_id: {
                "kind": t.kind,
                "items": t.n_items,
                "users": t.n_users,
                "interactions": t.n_interactions,
                "model_version": t.model_version,
                "setup_s": t.setup_s,
            }
            for t in tenants
        }
        results["repeats"] = repeats
        results["median"] = median_of(repeats)
        results["wrk"] = {
            name: {"runs": runs, "median": median_of(runs)} for name, runs in wrk.items()
        }
        print("profiling in-process ...", flush=True)
        results["profile"] = {
            t.tenant_id: profile_tenant(platform, t.tenant_id, bodies[t.tenant_id], args.profile_n)
            for t in tenants
        }
        ml = tenants[0].tenant_id  # the trained tenant: the one with neighbours
        results["intents"] = {ml: compare_intents(platform, ml, bodies[ml], args.profile_n)}
        platform.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
        try:
            flush_redis()
        finally:
            shutil.rmtree(home, ignore_errors=True)
    results["total_s"] = round(time.perf_counter() - started, 1)
    return results


def report(results: dict[str, Any]) -> str:
    """A plain-text summary of the median figures."""
    lines = []
    median = results["median"]
    for name, runs in median.items():
        for label, r in runs.items():
            line = f"{name:<12} {label:<10} {_short(r)}"
            if "stages_ms" in r:
                line += "  stages p50: " + ", ".join(
                    f"{s} {v['p50']}" for s, v in r["stages_ms"].items()
                )
            lines.append(line)
    for name, w in results.get("wrk", {}).items():
        m = w["median"]
        lines.append(
            f"{name:<12} wrk x{m['connections']:<5} {m['requests_per_s']} req/s, "
            f"p50 {m.get('p50_ms')} p99 {m.get('p99_ms')} ms, non-2xx {m['non_2xx']}"
        )
    for name, spy in results.get("server_profile", {}).items():
        if "share" in spy:
            lines.append(
                f"server (py-spy, GIL samples) {name}: "
                + ", ".join(f"{label} {share:.0%}" for label, share in spy["share"].items())
            )
    for name, c in results.get("intents", {}).items():
        lines.append(
            f"intents {name}: total p50 next {c['ms']['next']['total']['p50']} ms, profile "
            f"{c['ms']['profile']['total']['p50']} ms "
            f"({c['total_p50_ratio_profile_to_next']}x); p99 {c['ms']['next']['total']['p99']} / "
            f"{c['ms']['profile']['total']['p99']} ms"
        )
    for name, p in results.get("profile", {}).items():
        lines.append(f"profile {name}: {p['profiled_ms_per_request']} ms/request under cProfile")
        for stage, entries in p["stages"].items():
            for e in entries:
                lines.append(f"  {stage:<9} {e['cum_ms_per_request']:>8} ms  {e['function']}")
    for name, runs in median.items():
        key = f"open_{TARGET_RATE:g}"
        if name != "healthz" and key in runs:
            r = runs[key]
            met = (
                r["p99_ms"] is not None
                and r["p99_ms"] <= TARGET_P99_MS
                and r["achieved_rps"] >= 0.98 * TARGET_RATE
                and r["errors"] == 0
            )
            lines.append(
                f"target p99 <= {TARGET_P99_MS:g} ms at {TARGET_RATE:g} req/s, {name}: "
                f"{'met' if met else 'NOT met'} (p99 {r['p99_ms']} ms, {r['achieved_rps']} req/s)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, write JSON to --out, print a summary."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-serving")
    parser.add_argument("--quick", action="store_true", help="5 s runs at 300 req/s, once")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load run")
    parser.add_argument("--wrk-duration", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=ML_EPOCHS)
    parser.add_argument("--users", type=int, default=20_000, help="synthetic tenant users")
    parser.add_argument("--interactions", type=int, default=300_000)
    parser.add_argument("--profile-n", type=int, default=3_000)
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--workers", type=int, default=1, help="atlasrec serve --workers")
    parser.add_argument(
        "--server-env", nargs="*", default=[], metavar="KEY=VALUE", help="extra server env"
    )
    parser.add_argument(
        "--py-spy",
        default=shutil.which("py-spy"),
        help="py-spy executable: sample the server under load (skipped when absent)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args = argparse.Namespace(
            **{
                **vars(args),
                "rates": [TARGET_RATE],
                "duration": 5.0,
                "wrk_duration": 5,
                "repeats": 1,
                "interactions": min(args.interactions, 100_000),
                "users": min(args.users, 10_000),
                "profile_n": 1_000,
            }
        )
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()} {os.cpu_count()} cores, {host.platform()}",
        "quick": args.quick,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "quick")},
        "note": (
            "synthetic tenant: item embeddings are deterministic pseudo-random unit vectors "
            "written into item_embeddings (not MiniLM); the tenant is untrained "
            "(content-embedding path). Client and server share the machine's cores."
        ),
    }
    results.update(run(args))
    text = json.dumps(results, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    print(report(results))


if __name__ == "__main__":
    main()
