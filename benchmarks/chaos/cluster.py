"""One region's processes on the suite's servers: two `atlasrec serve`, one consumer process.

Both serving processes share the region's PostgreSQL, Redis and JetStream; the log's
consumers (online features, offline store, served-request records) run in a process of their
own, as in production. The artifact store is a small tmpfs of its own where the machine
allows a mount, so the disk fault fills that disk and nothing else.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.chaos.services import Nats, Postgres, Redis
from benchmarks.events.processes import Proc, free_port, run_child

REGION = "eu"
TENANT = "shop"
ARTIFACT_DISK_MB = 48


class Region:
    """A region of one code version: its home, settings, tenant and processes."""

    def __init__(
        self, name: str, code: Path, work: Path, pg: Postgres, redis: Redis, nats: Nats
    ) -> None:
        self.name, self.code, self.work = name, code, work
        self.pg, self.redis, self.nats = pg, redis, nats
        self.home = work / "home"
        self.home.mkdir(parents=True)
        self.api_key = ""
        self.servers: list[Proc] = []
        self.ports: list[int] = []
        self.consumer: Proc | None = None
        self.artifact_disk = self.home / "regions" / REGION / "artifacts"
        self.mounted = False

    def env(self) -> dict[str, str]:
        """The environment of the region's processes (nothing else of ATLASREC_* leaks in)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATLASREC_")}
        env.update(
            PYTHONPATH=str(self.code),
            ATLASREC_HOME=str(self.home),
            ATLASREC_CONTROL_DB_URL=self.pg.url("control"),
            ATLASREC_REGION_DB_URLS__EU=self.pg.url("region_eu"),
            ATLASREC_REDIS_URL=self.redis.url,
            ATLASREC_EVENT_LOG_URL=self.nats.url,
            ATLASREC_EVENT_LOG_ROOT=self.name.replace("-", ""),
            ATLASREC_SERVING_CONSUMERS="false",
            TOKENIZERS_PARALLELISM="false",
            HF_HUB_OFFLINE="1",
        )
        return env

    def cli(self, *args: str, timeout_s: float = 900) -> tuple[int, str]:
        """Run an `atlasrec` command of this code version; (exit code, output)."""
        argv = [sys.executable, "-m", "atlasrec", *args]
        done = run_child(argv, self.env(), self.code, timeout_s=timeout_s)
        return done.returncode, done.output

    def must(self, *args: str) -> str:
        """`cli`, raising on a non-zero exit; the output."""
        code, output = self.cli(*args)
        if code:
            raise RuntimeError(f"{self.name}: atlasrec {' '.join(args[:2])}: {output[-2000:]}")
        return output

    def mount_artifact_disk(self) -> bool:
        """A tmpfs of `ARTIFACT_DISK_MB` as the artifact store; False where mounts fail."""
        self.artifact_disk.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(  # noqa: S603 - mount, fixed arguments
            [
                "/usr/bin/mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={ARTIFACT_DISK_MB}m,mode=0700",
                "tmpfs",
                str(self.artifact_disk),
            ],
            capture_output=True,
            check=False,
        )
        self.mounted = done.returncode == 0
        return self.mounted

    def prepare(self, items_csv: Path, interactions_csv: Path) -> None:
        """Create the tenant, ingest its catalog and history, train its first model."""
        made = self.must(
            "tenants", "create", "--id", TENANT, "--region", REGION, "--sharing", "solo"
        )
        self.api_key = json.loads(made[made.index("{") :])["api_key"]
        self.must(
            "ingest",
            "--tenant",
            TENANT,
            "--items",
            str(items_csv),
            "--interactions",
            str(interactions_csv),
        )
        self.must("train", "--tenant", TENANT, "--no-dp")

    def start(self, servers: int = 2) -> None:
        """Start the consumer process and `servers` serving processes; wait until healthy."""
        self.consumer = Proc(
            [sys.executable, "-m", "atlasrec", "events", "consume", "--region", REGION],
            self.env(),
            self.work / "consumer.log",
            self.code,
        ).launch()
        for n in range(servers):
            port = free_port(28_400)
            self.ports.append(port)
            self.servers.append(self._server(n, port).launch())
        for proc, port in zip(self.servers, self.ports, strict=True):
            proc.ready(port)

    def _server(self, n: int, port: int) -> Proc:
        argv = [
            sys.executable,
            "-m",
            "atlasrec",
            "serve",
            "--region",
            REGION,
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        return Proc(argv, self.env(), self.work / f"server{n}.log", self.code)

    def kill9(self, n: int) -> None:
        """Kill -9 serving process `n` (no drain, no clean-up)."""
        os.kill(self.servers[n].pid, signal.SIGKILL)
        assert self.servers[n].proc is not None
        self.servers[n].proc.wait(timeout=10)  # type: ignore[union-attr]

    def restart(self, n: int) -> Proc:
        """Start serving process `n` again on its port (as a supervisor would), not waiting."""
        self.servers[n] = self._server(n, self.ports[n]).launch()
        return self.servers[n]

    def stop(self) -> None:
        """Stop every process of the region (gracefully) and unmount its artifact disk."""
        for proc in [*self.servers, *([self.consumer] if self.consumer else [])]:
            proc.stop(timeout_s=30)
        if self.mounted:
            subprocess.run(["/usr/bin/umount", "-l", str(self.artifact_disk)], check=False)  # noqa: S603


def users(interactions_csv: Path) -> list[str]:
    """The user ids of the tenant's history."""
    with interactions_csv.open(encoding="utf-8", newline="") as fh:
        return sorted({row["user_id"] for row in csv.DictReader(fh)})


def region_sql(region: Region, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a query on the region database (psycopg, as the superuser)."""
    import psycopg

    url = region.pg.url("region_eu").replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url, connect_timeout=5) as conn:
        return list(conn.execute(query, args).fetchall())
