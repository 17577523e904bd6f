"""`flwr run .` on Flower's deployment engine: a SuperLink for the region, a SuperNode per tenant.

Real processes: `flower-superlink`, one `flower-supernode` per tenant (its tenant in its node
config) and the `flwr` CLI, each with a `FLWR_HOME` of its own. The aggregator's side (the
SuperLink and the ServerApp it spawns, which inherits its environment) runs with an
ATLASREC_HOME of its own whose key folder holds the public keys only, and reaches the region's
database by URL; the tenants' SuperNodes run with the key holders' home.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atlasrec.federation.store import (
    global_store,
    key_service,
    open_backbone,
    region_domain,
    region_store,
)
from atlasrec.settings import Settings
from atlasrec.tenancy import Region
from privacy.he import KeyUnavailableError
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

CONNECTION = "eu-aggregator"


def nodes_online(env: dict[str, str]) -> int:
    listed = flwr(["supernode", "ls", CONNECTION], env)
    return sum(node["status"] == "online" for node in listed.get("nodes", []))


@pytest.mark.flower
@pytest.mark.timeout(480)
def test_flwr_run_on_the_deployment_engine(tmp_path: Path) -> None:
    tenants = seed_eu(tmp_path / "tenants")
    keys = key_service(tenants)
    aggregator = Settings(
        home=tmp_path / "aggregator",
        control_db_url=tenants.control_url(),
        region_db_urls={Region.EU: tenants.region_url(Region.EU)},
    )
    # the key ceremony: the region's key holders give the aggregator public keys only
    for domain in (region_domain(Region.EU), "global"):
        keys.ensure(domain)
        keys.export_public(domain, aggregator.home / "keys")
    port = free_port()
    cli = environment(FLWR_HOME=tmp_path / "flwr-cli")
    write_connection(tmp_path / "flwr-cli", CONNECTION, f"127.0.0.1:{port}")

    with processes(tmp_path / "logs") as started:
        started.start(
            "superlink",
            [
                "flower-superlink",
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",  # nothing to fetch: all installed
            ],
            environment(
                ATLASREC_HOME=aggregator.home,
                ATLASREC_CONTROL_DB_URL=aggregator.control_url(),
                ATLASREC_REGION_DB_URLS__EU=aggregator.region_url(Region.EU),
                FLWR_HOME=tmp_path / "flwr-superlink",
            ),
        )
        wait_for("the SuperLink", lambda: superlink_ready(port), 60)
        for tenant in EU_TENANTS:
            started.start(
                f"supernode-{tenant}",
                [
                    "flower-supernode",
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--port",
                    str(free_port()),
                    "--node-config",
                    f"tenant-id='{tenant}' region='eu'",
                ],
                environment(ATLASREC_HOME=tenants.home, FLWR_HOME=tmp_path / f"flwr-{tenant}"),
            )
        wait_for("every SuperNode online", lambda: nodes_online(cli) == len(EU_TENANTS), 60)

        run = flwr(
            ["run", ".", CONNECTION, "--run-config", "num-server-rounds=2 local-epochs=1"], cli
        )
        assert run["success"] and run["fab-name"] == "atlasrec", run
        status = wait_for_run(
            CONNECTION,
            run["run-id"],
            cli,
            timeout=300,
            done=federation_completed(tenants, Region.EU),
            logs=lambda: started.log("superlink"),
        )
        assert status == "finished:completed", started.log("superlink")
    assert len(started.stopped) > len(started.started)  # their SuperExecs and apps too
    assert not started.survivors()

    outcome = federation_outcome(tenants)
    fed_run = outcome.run
    assert fed_run.status == "completed" and fed_run.rounds_done == 2
    assert [set(r["participants"]) for r in fed_run.rounds] == [{"shop", "label"}] * 2
    for entry in fed_run.rounds:
        (reason,) = entry["refused"].values()
        assert "'vault' is a solo tenant" in reason
    assert outcome.refused == [("vault", "federation.join")] * 2  # refused in each round
    assert outcome.rounds_recorded == 2

    # the aggregator published into its own store, under the region's key it cannot open
    published = region_store(aggregator, Region.EU).latest()
    assert published is not None and published.version == fed_run.backbone_out
    assert published.encrypted and published.metadata["round"] == 2
    assert set(published.metadata["contributors"]) == {"shop", "label"}
    assert region_store(tenants, Region.EU).latest() is None
    cross_region = global_store(aggregator).latest()  # label's share, under the global key
    assert cross_region is not None and set(cross_region.metadata["contributors"]) == {"label"}
    assert cross_region.metadata["key_id"] == keys.key_id("global")
    assert sorted(p.name for p in (aggregator.home / "keys").iterdir()) == [
        "global.public",
        "region-eu.public",
    ]
    with pytest.raises(KeyUnavailableError):
        open_backbone(aggregator, published)
    weights = open_backbone(tenants, published)  # the key holders can
    assert all(bool(w.isfinite().all()) for w in weights.values())

    verified = audit_verify(tenants.home)
    assert verified.returncode == 0, verified.stdout + verified.stderr
