"""Where the serving path spends its time: in-process cProfile, intents, py-spy on the server."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from atlasrec.online_store import OnlineStore, make_backend
from atlasrec.tenancy import Region
from benchmarks.serving.config import REDIS_URL, REGION, STAGE_ROOTS
from benchmarks.serving.load import closed_loop, summarise
from benchmarks.serving.server import settle
from benchmarks.stats import p50_p99
from serving.pipeline import STAGES, Query, recommend
from serving.runtime import RegionRuntime


def _queries(runtime: Any, bodies: Sequence[dict[str, Any]]) -> list[Any]:
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
    return {stage: p50_p99([s.timings_ms[stage] for s in served]) for stage in (*STAGES, "total")}


def profile_tenant(
    platform: Any, tenant_id: str, bodies: Sequence[dict[str, Any]], n: int
) -> dict[str, Any]:
    """Run `recommend` in-process on the loaded tenant: plain timings, then under cProfile."""
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
        "request log thread (served requests to the region DB)": (None, "serving/request_log.py"),
        "response validation/serialisation (fastapi)": ("serialize_response", "fastapi/"),
        "request body validation (fastapi)": ("request_body_to_args", "fastapi/"),
        "authentication (API key -> tenant)": ("authenticated", "serving/deps.py"),
        "route handler (all of recommendations())": (
            "recommendations",
            "serving/routes/recommendations.py",
        ),
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
