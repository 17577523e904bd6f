"""`atlasrec demo --serve` stopped with SIGTERM stops the regional servers it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import sys, time
from pathlib import Path
from demos.serving import regional_servers
with regional_servers(["eu"]):
    children = Path(f"/proc/{__import__('os').getpid()}/task").glob("*/children")
    try:  # the SIGTERM can arrive while print() is still returning
        print(" ".join(c.read_text().strip() for c in children), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_the_servers_the_demo_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLASREC_")}
    env["ATLASREC_HOME"] = str(tmp_path / "home")
    demo = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, text=True
    )
    assert demo.stdout is not None
    servers = [int(pid) for pid in demo.stdout.readline().split()]
    assert servers and all(_alive(pid) for pid in servers)
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(timeout=60) == 0 and "stopping" in demo.stdout.read()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in servers)
