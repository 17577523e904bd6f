"""`flwr run .` on Flower's simulation engine (Ray): one virtual SuperNode per tenant.

The SuperLink runs in simulation mode (what `flwr run` starts for a local connection, here
started and stopped by the test); the number of SuperNodes and their resources come with the
run (`--federation-config`). Each node serves the tenant its `partition-id` names among the
region's tenants.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atlasrec.federation.store import region_store
from atlasrec.tenancy import Region
from tests.utils.flower import (
    EU_TENANTS,
    audit_verify,
    environment,
    federation_completed,
    federation_outcome,
    flwr,
    free_port,
    processes,
    seed_eu,
    superlink_ready,
    wait_for,
    wait_for_run,
    write_connection,
)

CONNECTION = "local-simulation"


@pytest.mark.flower
@pytest.mark.timeout(480)
def test_flwr_run_on_the_simulation_engine(tmp_path: Path) -> None:
    settings = seed_eu(tmp_path / "home")
    port = free_port()
    env = environment(ATLASREC_HOME=settings.home, FLWR_HOME=tmp_path / "flwr")
    write_connection(tmp_path / "flwr", CONNECTION, f"127.0.0.1:{port}")

    with processes(tmp_path / "logs") as started:
        started.start(
            "superlink",
            [
                "flower-superlink",
                "--insecure",
                "--simulation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
            env,
        )
        wait_for("the SuperLink", lambda: superlink_ready(port), 60)
        run = flwr(
            [
                "run",
                ".",
                CONNECTION,
                "--run-config",
                "num-server-rounds=2 local-epochs=1",
                "--federation-config",
                f"num-supernodes={len(EU_TENANTS)} client-resources-num-cpus=1",
            ],
            env,
        )
        assert run["success"], run
        status = wait_for_run(
            CONNECTION,
            run["run-id"],
            env,
            timeout=300,
            done=federation_completed(settings, Region.EU),
            logs=lambda: started.log("superlink"),
        )
        assert status == "finished:completed", started.log("superlink")
    assert len(started.stopped) > len(started.started)  # its SuperExec, Ray's processes
    assert not started.survivors()

    outcome = federation_outcome(settings)
    fed_run = outcome.run
    assert fed_run.status == "completed" and fed_run.rounds_done == 2
    assert [set(r["participants"]) for r in fed_run.rounds] == [{"shop", "label"}] * 2
    assert outcome.refused == [("vault", "federation.join")] * 2
    published = region_store(settings, Region.EU).latest()
    assert published is not None and published.version == fed_run.backbone_out
    assert published.encrypted and set(published.metadata["contributors"]) == {"shop", "label"}

    verified = audit_verify(settings.home)
    assert verified.returncode == 0, verified.stdout + verified.stderr
