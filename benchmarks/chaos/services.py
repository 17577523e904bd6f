"""The suite's own PostgreSQL, Redis and NATS servers, which it may stop and start at will.

The machine's shared servers are never touched: each fault stops a private server, started
here on a free port under the run's folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.events.processes import Proc, free_port, nats

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_SERVER = "/usr/bin/redis-server"
PG_USER = "postgres"
DATABASES = ("control", "region_eu")


def _as_postgres(argv: list[str], timeout_s: float = 120) -> str:
    """Run a PostgreSQL tool as the `postgres` user (initdb refuses root); its output."""
    prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
    done = subprocess.run(  # noqa: S603 - fixed PostgreSQL tools
        [*prefix, *argv], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{argv[0]} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    return done.stdout


class Postgres:
    """A private PostgreSQL cluster (trust auth on 127.0.0.1) that faults may stop."""

    def __init__(self) -> None:
        # A folder of its own under /tmp: the `postgres` user must reach it.
        self.folder = Path(tempfile.mkdtemp(prefix="atlasrec-chaos-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, PG_USER)
        self.data = self.folder / "pgdata"
        self.port = free_port(25_400)
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                PG_USER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )
        self.start()
        for name in DATABASES:
            _as_postgres(
                [
                    str(PG_BIN / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    PG_USER,
                    name,
                ]
            )

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of one of its databases."""
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.folder / "pg.log"),
                "-o",
                f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1",
                "-w",
                "start",
            ]
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (`immediate`: as on a crash, open connections cut)."""
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        """Whether the server runs."""
        try:
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"])
        except RuntimeError:
            return False
        return True

    def close(self) -> None:
        """Stop it if it runs and remove its folder."""
        if self.running():
            self.stop("fast")
        shutil.rmtree(self.folder, ignore_errors=True)


class Redis:
    """A private Redis server (nothing kept on disk, as the machine's) that faults may kill."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port(26_400)
        self.proc: Proc | None = None
        self.start()

    @property
    def url(self) -> str:
        """Its URL (db 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (empty: it keeps nothing on disk) and wait until it listens."""
        argv = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
        ]
        self.proc = Proc(argv, dict(os.environ), self.folder / "redis.log")
        self.proc.start(self.port, http=False, timeout_s=30)

    def kill(self) -> None:
        """Kill -9: the server and everything it held are gone."""
        assert self.proc is not None and self.proc.proc is not None
        self.proc.proc.kill()
        self.proc.proc.wait(timeout=10)

    def close(self) -> None:
        """Stop it if it runs."""
        if self.proc is not None:
            self.proc.stop(timeout_s=10)


class Nats:
    """A private JetStream server (file storage under the run's folder)."""

    def __init__(self, folder: Path) -> None:
        self.proc = nats(folder, free_port(27_400))
        self.url = f"nats://127.0.0.1:{self.proc.argv[4]}"

    def close(self) -> None:
        """Stop it."""
        self.proc.stop(timeout_s=10)


def wait_until(check: object, timeout_s: float, step_s: float = 0.1) -> float | None:
    """Seconds until `check()` is true, or None past `timeout_s`."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if check():  # type: ignore[operator]
            return time.perf_counter() - started
        time.sleep(step_s)
    return None
