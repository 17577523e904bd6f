"""Events acknowledged per serving process: open loop at a fixed event rate, and saturation.

The load generator is this process (asyncio, raw HTTP/1.1 keep-alive connections, from
`benchmarks.serving.load`); the server is a separate `atlasrec serve` process per variant.
Latency counts from when a request was due (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.serving.load import Sample, closed_loop, open_loop, summarise
from benchmarks.serving.server import cpu_seconds, quiet, settle
from benchmarks.stats import median_of


@dataclass(frozen=True)
class Shape:
    """One load shape: events per request, and a fixed offered event rate (None: saturate)."""

    name: str
    batch: int
    events_per_s: float | None
    connections: int = 16


@dataclass
class Target:
    """A running server of one variant, and the requests to send it per batch size."""

    variant: str
    port: int
    pid: int
    requests: dict[int, list[bytes]]


def _accounted(
    pid: int, load: Coroutine[Any, Any, tuple[list[Sample], float]], shape: Shape
) -> dict[str, Any]:
    """Run `load`; events/s acknowledged, latency, server and client CPU."""
    loadavg = os.getloadavg()[0]
    server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
    samples, elapsed = asyncio.run(load)
    server_cpu, client_cpu = cpu_seconds(pid) - server_cpu, time.process_time() - client_cpu
    out = summarise(samples, elapsed, None if shape.events_per_s is None else shape.events_per_s)
    acked = sum(1 for s in samples if s.status == 202)
    out["offered_events_per_s"] = shape.events_per_s
    out["events_per_s"] = round(acked * shape.batch / elapsed, 1) if elapsed > 0 else None
    out["server_cores_used"] = round(server_cpu / elapsed, 2)
    out["server_cpu_us_per_event"] = round(server_cpu * 1e6 / max(1, acked * shape.batch), 1)
    out["client_cores_used"] = round(client_cpu / elapsed, 2)
    out["loadavg_1m_before"] = round(loadavg, 2)
    return out


def one(target: Target, shape: Shape, duration_s: float) -> dict[str, Any]:
    """One run of `shape` against `target` (after the server has settled)."""
    settle(target.port, min(1.0, duration_s / 4))
    waited = quiet()
    requests = target.requests[shape.batch]
    if shape.events_per_s is None:
        load = closed_loop(target.port, requests, shape.connections, duration_s, False)
    else:
        rate = shape.events_per_s / shape.batch
        load = open_loop(target.port, requests, rate, duration_s, False)
    return {**_accounted(target.pid, load, shape), "quiet_wait_s": round(waited, 1)}


def interleaved(
    targets: Sequence[Target], shapes: Sequence[Shape], repeats: int, duration_s: float
) -> dict[str, Any]:
    """Every shape against every variant, `repeats` times, variants rotated each repeat."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        t.variant: {s.name: [] for s in shapes} for t in targets
    }
    for rep in range(repeats):
        order = [*targets[rep % len(targets) :], *targets[: rep % len(targets)]]
        for shape in shapes:
            for target in order:
                result = one(target, shape, duration_s)
                runs[target.variant][shape.name].append(result)
                print(
                    f"  [{rep + 1}/{repeats}] {target.variant:<15} {shape.name:<10} "
                    f"{result['events_per_s']:>9} ev/s  p50 {result['p50_ms']} ms  "
                    f"p99 {result['p99_ms']} ms  errors {result['errors']}  "
                    f"server {result['server_cores_used']} cores  "
                    f"client {result['client_cores_used']} cores",
                    flush=True,
                )
    return {
        variant: {name: {"runs": done, "median": median_of(done)} for name, done in by.items()}
        for variant, by in runs.items()
    }
