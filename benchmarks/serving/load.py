"""Load generators (open and closed loop, optional wrk) and the summaries of their runs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.serving.report import short
from benchmarks.serving.server import cpu_seconds, settle
from benchmarks.stats import p50_p99, percentile


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
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": round(max(latencies), 3) if latencies else None,
        "client_lag_p99_ms": percentile([s.lag_ms for s in samples], 99),
    }
    timed = [s.timings for s in ok if s.timings is not None]
    if timed:
        out["degraded"] = sum(1 for s in ok if s.degraded)
        out["stages_ms"] = {stage: p50_p99([t[stage] for t in timed]) for stage in timed[0]}
    return out


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
            print(f"  {name} @ {rate:g}/s: {short(out[name][f'open_{rate:g}'])}", flush=True)
    for name, (requests, timed) in targets.items():
        settle(port)
        out[name]["closed"] = {
            "connections": concurrency,
            **_accounted(pid, closed_loop(port, requests, concurrency, duration_s, timed), None),
        }
        print(f"  {name} closed x{concurrency}: {short(out[name]['closed'])}", flush=True)
    return out
