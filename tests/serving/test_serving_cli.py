"""`atlasrec serve` as a real process: region pinning, several workers, aggregated metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from conftest import ServedRegion, bearer

from atlasrec.platform import Platform


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_serve_runs_workers_of_one_region(region: ServedRegion, platform: Platform) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLASREC_")}
    env["ATLASREC_HOME"] = str(platform.settings.home)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atlasrec",
            "serve",
            "--region",
            "eu",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)
        for _ in range(10):
            response = httpx.post(
                f"{url}/v1/recommendations",
                json={"user_id": "user-1", "k": 3},
                headers=bearer(region.keys["shop"]),
            )
            assert response.status_code == 200 and response.json()["region"] == "eu"
        far = httpx.post(
            f"{url}/v1/recommendations", json={"k": 3}, headers=bearer(region.keys["far"])
        )
        assert far.status_code == 421
        metrics = httpx.get(f"{url}/metrics").text
        # both workers' counts, whichever worker answers the scrape
        assert (
            'atlasrec_requests_total{endpoint="recommendations",status="200",tenant="shop"} 10.0'
            in metrics
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
