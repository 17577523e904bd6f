"""Real child processes for fault and scale-out tests: start, kill -9, start again."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
ATLASREC = str(Path(sys.executable).with_name("atlasrec"))


class Proc:
    """A child process that can be killed (-9) and started again with the same command."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool] = lambda: True, timeout_s: float = 90) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[:3]} did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()


def answers(url: str) -> bool:
    """Whether `url` answers 200."""
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def nats_server(port: int, folder: Path, env: dict[str, str]) -> Proc:
    """A JetStream-enabled NATS server of the test's own, storing under `folder`."""
    argv = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(folder / "js")]
    return Proc(argv, env, folder / f"nats-{port}.log")
