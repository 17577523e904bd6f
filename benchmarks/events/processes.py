"""The processes under test: each variant's code, settings (env), servers, CLI runs, NATS."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.events.config import PORT_BASE, REGION

NATS_SERVER = "/usr/sbin/nats-server"
TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Variant:
    """One code version with one event log: what its processes run and on which settings."""

    name: str
    code: Path
    """The checkout whose `atlasrec` these processes import (PYTHONPATH)."""
    log_url: str | None = None
    """ATLASREC_EVENT_LOG_URL (JetStream); None: the embedded log (or, baseline, no log)."""
    baseline: bool = False


@dataclass
class Home:
    """A variant's own ATLASREC_HOME, Redis db and subject root; its environment."""

    variant: Variant
    path: Path
    redis_url: str
    root: str
    api_key: str = ""

    def env(self, *, serving_consumers: bool = False) -> dict[str, str]:
        """The environment of this home's processes (nothing else of ATLASREC_* leaks in)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATLASREC_")}
        env.update(
            PYTHONPATH=str(self.variant.code),
            ATLASREC_HOME=str(self.path),
            ATLASREC_REDIS_URL=self.redis_url,
            ATLASREC_SERVING_CONSUMERS=str(serving_consumers).lower(),
            ATLASREC_EVENT_LOG_ROOT=self.root,
            TOKENIZERS_PARALLELISM="false",
        )
        if self.variant.log_url:
            env["ATLASREC_EVENT_LOG_URL"] = self.variant.log_url
        return env

    def cli(self, *args: str) -> list[str]:
        """An `atlasrec` command line run with this interpreter (`python -m atlasrec`).

        Run it in the variant's checkout (`cwd`): `python -m` puts the working directory
        first on sys.path, ahead of PYTHONPATH.
        """
        return [sys.executable, "-m", "atlasrec", *args]


@dataclass
class ChildRun:
    """A finished child process: wall time, its own peak RSS and CPU, exit status, output."""

    seconds: float
    peak_rss_mb: float
    cpu_s: float
    returncode: int
    output: str

    def as_dict(self) -> dict[str, Any]:
        """The figures (not the output)."""
        return {
            "seconds": round(self.seconds, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "cpu_s": round(self.cpu_s, 2),
            "returncode": self.returncode,
        }


def run_child(
    argv: list[str], env: dict[str, str], cwd: Path | None = None, timeout_s: float = 1800
) -> ChildRun:
    """Run a command to completion under /usr/bin/time: its own peak RSS and CPU.

    Not `wait4` on our own child: Linux carries the peak RSS of the image before `exec`
    (this big benchmark process, forked) into the child's `ru_maxrss`; /usr/bin/time is a
    small process, so the figure it reports is the command's own.
    """
    with tempfile.NamedTemporaryFile(prefix="bench-time-", suffix=".txt") as stats:
        timed = [TIME, "-f", "%M %U %S", "-o", stats.name, *argv]
        started = time.perf_counter()
        try:
            done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
                timed, env=env, cwd=cwd, capture_output=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{argv[3:6]} ran over {timeout_s:.0f} s") from exc
        seconds = time.perf_counter() - started
        fields = Path(stats.name).read_text().split()[-3:]
    output = (done.stdout + done.stderr).decode(errors="replace")
    maxrss_kb, user_s, system_s = int(fields[0]), float(fields[1]), float(fields[2])
    return ChildRun(seconds, maxrss_kb / 1024, user_s + system_s, done.returncode, output)


def cli_json(home: Home, *args: str) -> dict[str, Any]:
    """Run an `atlasrec` command that prints JSON; the parsed JSON (raises on failure)."""
    done = run_child(home.cli(*args), home.env(), home.variant.code, timeout_s=600)
    if done.returncode:
        raise RuntimeError(f"{args[:2]} failed ({done.returncode}): {done.output[-2000:]}")
    text = done.output[done.output.index("{") :]
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def free_port(start: int = PORT_BASE) -> int:
    """A port from `start` on that nothing listens on and we have not handed out yet."""
    for port in range(start, start + 200):
        if port in _taken:
            continue
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                _taken.add(port)
                return port
    raise RuntimeError(f"no free port in {start}..{start + 199}")


_taken: set[int] = set()


def _answers(port: int, path: str = "/healthz") -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return conn.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Proc:
    """A long-running child (server, consumer, NATS): started, watched, stopped."""

    def __init__(
        self, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.argv, self.env, self.log, self.cwd = argv, env, log, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_s = 0.0
        self._launched = 0.0

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self.proc is not None
        return self.proc.pid

    def start(
        self, ready_port: int | None = None, *, http: bool = True, timeout_s: float = 300
    ) -> Proc:
        """Start it; wait until `ready_port` answers /healthz (or listens, `http` False)."""
        return self.launch().ready(ready_port, http=http, timeout_s=timeout_s)

    def launch(self) -> Proc:
        """Start it, without waiting."""
        self._launched = time.perf_counter()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own commands
                self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def ready(self, port: int | None, *, http: bool = True, timeout_s: float = 300) -> Proc:
        """Wait until `port` answers /healthz (or listens, `http` False); None: no wait."""
        assert self.proc is not None
        while port is not None:
            if (_answers if http else _listening)(port):
                break
            if self.proc.poll() is not None or time.perf_counter() - self._launched > timeout_s:
                self.stop()
                raise RuntimeError(f"{self.argv[:4]} did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.started_s = time.perf_counter() - self._launched
        return self

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident set (VmHWM) so far; None once it is gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def stop(self, timeout_s: float = 60) -> int | None:
        """SIGTERM (a graceful stop: queues drained), SIGKILL after `timeout_s`; exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


@contextmanager
def running(*procs: Proc) -> Iterator[None]:
    """Stop the (started) processes on the way out, last first."""
    try:
        yield
    finally:
        for proc in reversed(procs):
            proc.stop()


def server(home: Home, port: int, log: Path, *, serving_consumers: bool = False) -> Proc:
    """`atlasrec serve` (one worker) for a home, not yet started."""
    argv = home.cli("serve", "--region", REGION, "--port", str(port), "--workers", "1")
    return Proc(argv, home.env(serving_consumers=serving_consumers), log, home.variant.code)


def consumer(home: Home, log: Path, *names: str, once: bool = False) -> Proc:
    """`atlasrec events consume` for a home's region, not yet started."""
    argv = home.cli("events", "consume", "--region", REGION)
    for name in names:
        argv += ["--consumer", name]
    if once:
        argv.append("--once")
    return Proc(argv, home.env(), log, home.variant.code)


def nats(folder: Path, port: int) -> Proc:
    """A JetStream server of the benchmark's own (file storage under `folder`), started."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(folder / "js")]
    return Proc(argv, dict(os.environ), folder / "nats.log").start(port, http=False, timeout_s=30)
