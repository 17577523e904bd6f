"""The server under test: `atlasrec serve` as a subprocess, its health, its CPU time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.serving.config import PORT_BASE, REGION
from benchmarks.serving.fixtures import raw_get


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


def settle(port: int, pause_s: float = 2.0) -> None:
    """Let the server drain what an earlier (possibly overloaded) run left queued."""
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        if _healthz(port) == 200 and time.perf_counter() - started < 0.05:
            break
        time.sleep(0.5)
    time.sleep(pause_s)


def quiet(busy_cores: float = 0.1, window_s: float = 0.5, timeout_s: float = 60.0) -> float:
    """Wait until the whole machine uses under `busy_cores` over `window_s`; seconds waited.

    A run then starts with nothing of an earlier one still at work in any process (a
    server's background writer, the event log flushing): on a shared 2-core machine that
    work would otherwise land in the next run's tail latency. Gives up after `timeout_s`.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        before = _busy_seconds()
        time.sleep(window_s)
        if (_busy_seconds() - before) / window_s < busy_cores:
            break
    return time.perf_counter() - started


def _busy_seconds() -> float:
    """CPU seconds the machine has spent busy (all cores; /proc/stat minus idle and iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


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
