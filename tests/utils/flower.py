"""Real Flower processes for tests: SuperLinks, SuperNodes and the `flwr` CLI.

Every process is started in its own session and stopped, with everything it spawned (Flower
detaches its SuperExec into a session of its own), by `Processes.stop`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import create_engine
from sqlmodel import Session, col, select

from atlasrec.dataplane.tables import FederationRun
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, SharingPolicy
from tests.utils.factories import seed_music_tenant

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T = TypeVar("T")

EU_TENANTS = {
    "shop": SharingPolicy.REGIONAL,
    "label": SharingPolicy.GLOBAL,
    "vault": SharingPolicy.SOLO,
}
"""One tenant of each sharing policy, homed in `eu`."""


def seed_eu(home: Path) -> Settings:
    """An ATLASREC_HOME with the music catalog's tenants homed in `eu` (one of each policy)."""
    settings = Settings(home=home)
    platform = Platform(settings)
    try:
        for tenant, sharing in EU_TENANTS.items():
            seed_music_tenant(platform, tenant, Region.EU, home / "csv", sharing=sharing)
    finally:
        platform.close()
    return settings


def free_port() -> int:
    """A TCP port that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(**values: str | Path) -> dict[str, str]:
    """This process's environment without AtlasRec or Flower settings, plus `values`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("ATLASREC_") or k.startswith("FLWR_"))
        or k.startswith("ATLASREC_TEST_")
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    # A SuperLink would otherwise `uv sync` the app's dependencies into a fresh environment
    # for every run (gigabytes: torch's CUDA wheels); they are installed already.
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env.update({k: str(v) for k, v in values.items()})
    return env


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.5) -> T:
    """The first truthy result of `check`, or a failure naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            # the command name may hold spaces and parentheses: the ppid follows the last ')'
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children first found, breadth first)."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Processes:
    """Processes a test started; `stop` ends them and all they spawned."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []
        self.stopped: list[int] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Start `args` (a Flower executable and its flags) in a session of its own."""
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(BIN / args[0]), *args[1:]],
                cwd=self.logs,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        """What a started process wrote so far."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def alive(self) -> list[int]:
        """Started processes and their descendants still running."""
        pids = [p.pid for p in self.started if p.poll() is None]
        for process in self.started:
            pids += descendants(process.pid)
        return [pid for pid in pids if _running(pid)]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every started process and its descendants; SIGKILL what outlives `grace`."""
        targets = self.alive()
        self.stopped += targets
        for pid in targets:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_running(pid) for pid in targets):
            for process in self.started:
                process.poll()  # reap our own children
            time.sleep(0.2)
        for pid in targets:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self.started:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)

    def survivors(self) -> list[int]:
        """Processes `stop` signalled (ours and all they had spawned) that still run."""
        return [pid for pid in self.stopped if _running(pid)]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@contextmanager
def processes(logs: Path) -> Iterator[Processes]:
    """A `Processes` that is stopped on exit, whatever happened."""
    started = Processes(logs)
    try:
        yield started
    finally:
        started.stop()


def superlink_ready(port: int) -> bool:
    """Whether a SuperLink answers on 127.0.0.1:`port`."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).is_success
    except httpx.HTTPError:
        return False


def write_connection(flwr_home: Path, name: str, address: str) -> None:
    """A `[superlink.<name>]` connection (insecure, default) in `$FLWR_HOME/config.toml`."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n'
        f'[superlink.{name}]\naddress = "{address}"\ninsecure = true\n'
    )


def flwr(args: list[str], env: Mapping[str, str], timeout: float = 120) -> Any:
    """Run the `flwr` CLI from the repository root with `--format json`; its JSON answer."""
    done = subprocess.run(
        [str(BIN / "flwr"), *args, "--format", "json"],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = done.stdout
    try:
        return json.loads(out[out.index("{") :])
    except ValueError:
        raise AssertionError(
            f"flwr {' '.join(args)} exited {done.returncode}:\n{out}\n{done.stderr}"
        ) from None


def run_status(connection: str, run_id: str, env: Mapping[str, str]) -> str:
    """The run's status as `flwr ls` reports it (e.g. "running", "finished:completed")."""
    listed = flwr(["ls", connection, "--run-id", run_id], env)
    assert listed.get("success"), listed
    return str(listed["runs"][0]["status"])


def wait_for_run(
    connection: str,
    run_id: str,
    env: Mapping[str, str],
    *,
    timeout: float,
    done: Callable[[], bool],
    logs: Callable[[], str],
) -> str:
    """Wait for the run to finish; Flower's final status for it (e.g. "finished:completed").

    `done` (cheap: the federation's own record) is polled every second; Flower is asked
    (`flwr ls`, a CLI start: costly on 2 cores) every 15 s, and every second once `done`.
    """
    deadline = time.monotonic() + timeout
    ask_at = time.monotonic() + 15
    while not done():
        if time.monotonic() >= ask_at:
            status = run_status(connection, run_id, env)
            if status.startswith("finished"):
                return status
            ask_at = time.monotonic() + 15
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not finish in {timeout:.0f} s\n{logs()}")
        time.sleep(1.0)

    def finished() -> str | None:
        status = run_status(connection, run_id, env)
        return status if status.startswith("finished") else None

    return wait_for(f"Flower to mark run {run_id} finished", finished, 60, every=1.0)


def federation_completed(settings: Settings, region: Region) -> Callable[[], bool]:
    """Whether the region has a completed federation run (read from its database)."""
    engine = create_engine(settings.region_url(region))

    def completed() -> bool:
        query = select(FederationRun.status).where(col(FederationRun.region) == region.value)
        with Session(engine) as session:
            return "completed" in session.execute(query).scalars().all()

    return completed


@dataclass(frozen=True)
class Outcome:
    """What a federation left in the region: its run row and ledger records."""

    run: FederationRun
    refused: list[tuple[str | None, str]]
    """(tenant, attempted action) of every `boundary.refused` record."""
    rounds_recorded: int


def federation_outcome(settings: Settings) -> Outcome:
    """The region's one federation run, its refusals and its `federation.round` records."""
    platform = Platform(settings)
    try:
        plane = platform.plane(Region.EU)
        with Session(plane.engine) as session:
            (fed_run,) = session.execute(select(FederationRun)).scalars().all()
        refusals = plane.ledger.records(action="boundary.refused", limit=None)
        rounds = plane.ledger.records(action="federation.round", limit=None)
    finally:
        platform.close()
    attempts = [(r.tenant_id, json.loads(r.details)["attempted"]) for r in refusals]
    return Outcome(fed_run, attempts, len(rounds))


def audit_verify(home: Path) -> subprocess.CompletedProcess[str]:
    """`atlasrec audit verify --region eu` as a command, on the tenants' home."""
    return subprocess.run(
        [str(BIN / "atlasrec"), "audit", "verify", "--region", "eu"],
        env=environment(ATLASREC_HOME=home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
