"""The demo's serving part: one real `atlasrec serve` process per region, real HTTP calls."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from atlasrec.datasets import TenantDataset
from atlasrec.errors import AtlasRecError
from atlasrec.platform import Platform
from atlasrec.settings import get_settings
from atlasrec.tenancy import parse_region
from demos.audit import print_audit_access

START_TIMEOUT_S = 120.0
DEMO_EVENT_TS = 1_735_689_600  # 2025-01-01
NO_NEIGHBOURS = " (the history has no item in the model's EASE head)"
"""Why a `profile` request may be served in the `next` order."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def regional_servers(regions: Sequence[str]) -> Iterator[dict[str, str]]:
    """Start `atlasrec serve` for each region; yield region -> base URL; stop them after."""
    processes: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    env = {k: v for k, v in os.environ.items() if k != "ATLASREC_REGION"}
    previous = _stop_on_sigterm()
    try:
        for region in regions:
            port = _free_port()
            command = [sys.executable, "-m", "atlasrec", "serve", "--region", region]
            process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
                [*command, "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            processes[region] = (process, f"http://127.0.0.1:{port}")
        for region, (process, url) in processes.items():
            _wait_ready(region, process, url)
        yield {region: url for region, (_, url) in processes.items()}
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # graceful: queued records are written
        for process, _ in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm() -> Any:
    """Treat SIGTERM as Ctrl-C, so the servers are stopped too; the handler it replaced.

    None where handlers cannot be set (not the main thread).
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)


def _wait_ready(region: str, process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise AtlasRecError(f"the {region} server exited: {error.strip()[-500:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AtlasRecError(f"the {region} server did not answer within {START_TIMEOUT_S:.0f} s")


def register_endpoints(urls: dict[str, str]) -> None:
    """Register each running server's URL as its region's endpoint (the platform view)."""
    platform = Platform(get_settings())
    try:
        for region, url in urls.items():
            platform.control.set_region_endpoint(parse_region(region), url)
    finally:
        platform.close()


def _call(client: httpx.Client, method: str, url: str, key: str, body: Any) -> httpx.Response:
    return client.request(method, url, json=body, headers={"Authorization": f"Bearer {key}"})


def serve_regions(
    console: Console,
    datasets: Sequence[TenantDataset],
    keys: dict[str, str],
    *,
    keep_serving: bool = False,
    meanwhile: Callable[[dict[str, str]], None] | None = None,
) -> None:
    """Serve every region and make real requests for each tenant; optionally stay up.

    `meanwhile` runs with the regions' URLs while they serve (the rollout demo).
    """
    regions = sorted({ds.region.value for ds in datasets})
    console.print(f"\nstarting one serving process per region ({', '.join(regions)}) ...")
    with regional_servers(regions) as urls, httpx.Client(timeout=30.0) as client:
        register_endpoints(urls)
        table = Table(title="Serving over HTTP (one process per region, real requests)")
        for column in ("tenant", "region", "request", "answer", "total ms"):
            table.add_column(column)
        for ds in datasets:
            _tenant_calls(client, table, ds, urls[ds.region.value], keys.get(ds.tenant_id))
        console.print(table)
        first, other = datasets[0], next(d for d in datasets if d.region != datasets[0].region)
        if first.tenant_id in keys:
            refused = _call(
                client,
                "POST",
                f"{urls[other.region.value]}/v1/recommendations",
                keys[first.tenant_id],
                {"user_id": "u1", "k": 3},
            )
            console.print(
                f"{first.tenant_id}'s key at the {other.region.value} server -> "
                f"{refused.status_code}: {refused.json()['detail']}"
            )
        if meanwhile is not None:
            meanwhile(urls)
        if keep_serving:
            console.print("\n[bold]serving[/bold] (Ctrl-C to stop):")
            for region, url in urls.items():
                console.print(f"  {region}: {url}  (OpenAPI: {url}/docs)")
            console.print("  API keys: demo-api-keys.json in the data folder")
            print_audit_access(console, urls, datasets, actor="demo")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                console.print("stopping the servers")


def _tenant_calls(
    client: httpx.Client, table: Table, ds: TenantDataset, url: str, key: str | None
) -> None:
    if key is None:  # tenants created by an earlier run whose key file was lost
        table.add_row(ds.tenant_id, ds.region.value, "-", "no API key on file", "-")
        return
    user = first_user(ds)
    before = _call(client, "POST", f"{url}/v1/recommendations", key, {"user_id": user, "k": 3})
    body = before.json()
    table.add_row(
        ds.tenant_id,
        ds.region.value,
        f"recommend {user}",
        f"{body['model_version']} ({body['intent']} order): "
        f"{', '.join(i['item_id'] for i in body['items'])}",
        f"{body['timings_ms']['total']:.1f}",
    )
    profile = _call(
        client,
        "POST",
        f"{url}/v1/recommendations",
        key,
        {"user_id": user, "k": 3, "intent": "profile"},
    ).json()
    table.add_row(
        "",
        "",
        f"recommend {user}, intent profile",
        f"{profile['intent']} order{NO_NEIGHBOURS if profile['intent'] == 'next' else ''}: "
        f"{', '.join(i['item_id'] for i in profile['items'])}",
        f"{profile['timings_ms']['total']:.1f}",
    )
    newcomer = f"demo-newcomer-{ds.tenant_id}"
    liked = [i["item_id"] for i in body["items"][:2]]
    # fixed times: a re-run replays the same events, which are stored once (no new data)
    events = [
        {"user_id": newcomer, "item_id": item, "timestamp": DEMO_EVENT_TS + n}
        for n, item in enumerate(liked)
    ]
    _call(client, "POST", f"{url}/v1/events", key, {"events": events})
    after = _call(client, "POST", f"{url}/v1/recommendations", key, {"user_id": newcomer, "k": 3})
    fresh = after.json()
    table.add_row(
        "",
        "",
        f"after 2 events of {newcomer}",
        f"cold_start={fresh['cold_start']}: {', '.join(i['item_id'] for i in fresh['items'])}",
        f"{fresh['timings_ms']['total']:.1f}",
    )


def first_user(ds: TenantDataset) -> str:
    """The user of the first interaction in a tenant's file."""
    with ds.interactions_csv.open(encoding="utf-8") as fh:
        fh.readline()
        return fh.readline().split(",", 1)[0]
