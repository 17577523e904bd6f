"""Lineage: a served request back to its model, DP run, data snapshot, backbone and rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from atlasrec.control.cap_requests import CapRequests
from atlasrec.control.officers import OfficerRole, Officers
from atlasrec.dataplane.dp_runs import DpRunTable
from atlasrec.models.bundle import KIND
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.settings import get_settings
from atlasrec.tenancy import Region, Scope, SharingPolicy
from audit.lineage import (
    NO_BACKBONE,
    UnknownRequestError,
    find_request,
    lineage_lines,
    request_lineage,
)
from audit.ui.templating import templates
from privacy.accounting import Mechanism
from privacy.budget import BudgetExceededError, Charge
from serving.app import create_app
from tests.atlasrec.test_cli import cli
from tests.utils.audit import FED_RUN, AuditWorld, seed_audit_world, serve_record
from tests.utils.factories import seed_music_tenant

SHOP = Scope("shop", Region.EU)
FAST = TwoTowerConfig(
    dim=16, hidden=32, history=10, positives=4, negatives=16, epochs=3, batch_size=8
)


def chain_of(world: AuditWorld, request_id: str) -> dict:  # type: ignore[type-arg]
    scope, row = find_request(world.platform, request_id, regions=list(Region), actor="t")
    return request_lineage(world.platform, scope, row, actor="t")


def publish_model(world: AuditWorld, **lineage: object) -> str:
    """Another model version of shop, with `lineage` over the seeded one's; a request for it."""
    plane = world.platform.plane(Region.EU)
    seeded = plane.artifacts.get(SHOP, KIND, world.model_version, actor="t")
    artifact = plane.artifacts.publish(
        SHOP,
        KIND,
        lambda path: (path / "model.pt").write_bytes(b"x"),
        actor="t",
        metadata={**seeded.manifest["metadata"], **lineage},
    )
    return serve_record(world.platform, SHOP, artifact.version)


def test_the_chain_of_a_federated_model(world: AuditWorld) -> None:
    chain = chain_of(world, world.requests["shop"])
    assert chain["request"]["tenant_id"] == "shop" and chain["request"]["region"] == "eu"
    model = chain["model"]
    assert model["version"] == world.model_version and model["attributed"]
    assert (model["tenant_id"], model["region"]) == ("shop", "eu")
    run = chain["training"]["run"]
    assert run["run_id"] == world.runs["shop"][3] and run["kind"] == "train"
    snapshot = chain["data_snapshot"]
    assert snapshot["hash"] == world.snapshot and snapshot["verified"]
    assert [f["kind"] for f in snapshot["files"]] == ["items", "interactions"]
    backbone = chain["backbone"]
    assert backbone["present"] and backbone["version"] == "bb-v2"
    assert backbone["contributors"] == {"shop": 0.832, "other": 1.0}
    assert [(r["round"], r["backbone_in"], r["backbone_out"]) for r in backbone["rounds"]] == [
        (1, None, "bb-v1"),
        (2, "bb-v1", "bb-v2"),
    ]
    assert all(r["federation_run"] == FED_RUN for r in backbone["rounds"])
    assert [r["run_id"] for r in backbone["tenant_rounds"]] == world.runs["shop"][1:3]
    text = "\n".join(lineage_lines(chain))
    for expected in (world.model_version, world.snapshot, "bb-v2", "contributor other"):
        assert expected in text


def test_what_is_absent_is_said(world: AuditWorld) -> None:
    solo = chain_of(world, publish_model(world, parent_backbone=None))
    assert solo["backbone"] == {"present": False, "note": NO_BACKBONE}
    assert NO_BACKBONE in "\n".join(lineage_lines(solo))

    content_only = chain_of(world, world.requests["label"])
    assert content_only["model"] is None and "no trained model" in content_only["model_note"]

    unmatched = chain_of(world, publish_model(world, data_snapshot="0" * 64))
    assert unmatched["data_snapshot"]["verified"] is False
    assert "NOT matched" in "\n".join(lineage_lines(unmatched))

    no_dp = chain_of(world, publish_model(world, dp=None))
    assert no_dp["training"]["dp"] is None and "without DP" in no_dp["training"]["note"]

    order = {"chosen": "popularity", "weight": 1.0, "reason": "the floor: below on next"}
    floored = chain_of(
        world, publish_model(world, default_order=order | {"below_popularity": ["next"]})
    )
    assert floored["model"]["default_order"]["chosen"] == "popularity"
    text = "\n".join(lineage_lines(floored))
    assert (
        "default order: popularity: the floor: below on next; served popularity for: next" in text
    )

    elsewhere = chain_of(
        world, publish_model(world, parent_backbone={"version": "x", "region": "us"})
    )
    assert elsewhere["backbone"]["rounds"] == []
    assert "region 'us'" in elsewhere["backbone"]["note"]


def test_unknown_requests(world: AuditWorld) -> None:
    with pytest.raises(UnknownRequestError, match="no served request"):
        find_request(world.platform, "f" * 32, regions=list(Region), actor="t")
    with pytest.raises(UnknownRequestError):  # it is in eu, not us
        find_request(world.platform, world.requests["shop"], regions=[Region.US], actor="t")
    with pytest.raises(UnknownRequestError):  # narrowed to another tenant
        find_request(
            world.platform,
            world.requests["shop"],
            regions=[Region.EU],
            actor="t",
            tenants=["label"],
        )


def test_the_command_line(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = Platform(get_settings())
    world = seed_audit_world(platform, tmp_path)
    platform.close()
    request_id = world.requests["shop"]
    code, out, _ = cli(capsys, "audit", "lineage", "--request-id", request_id)
    assert code == 0 and out.startswith(f"request {request_id}  tenant shop  region eu")
    assert world.model_version in out and "verified against" in out and "bb-v1" in out
    code, out, _ = cli(capsys, "audit", "lineage", "--request-id", request_id, "--json")
    assert code == 0 and json.loads(out)["backbone"]["version"] == "bb-v2"
    for args, message in (
        (["--request-id", "f" * 32], "no served request"),
        (["--request-id", request_id, "--region", "us"], "in region(s) us"),
        (["--request-id", "../x"], "field 'request_id'"),
        (["--request-id", request_id, "--region", "mars"], "unknown region 'mars'"),
    ):
        code, _, err = cli(capsys, "audit", "lineage", *args)
        assert code == 1 and err.startswith("error: ") and message in err
        assert err.count("\n") == 1

    code, out, _ = cli(capsys, "audit", "report", "--tenant", "shop", "--format", "csv")
    assert code == 0 and out.startswith("record_type,tenant_id,region")
    target = tmp_path / "shop.html"
    code, out, _ = cli(
        capsys, "audit", "report", "--tenant", "shop", "--format", "html", "--output", str(target)
    )
    assert code == 0 and "<style>" in target.read_text() and "budget-chart" in target.read_text()
    code, _, err = cli(capsys, "audit", "report", "--tenant", "shop", "--format", "pdf")
    assert code == 1 and "unknown --format 'pdf'" in err


def test_from_a_served_request_to_its_dp_run_and_a_lowered_cap_stops_training(
    cli_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end on a real model: train with DP, serve over HTTP, follow the request back;
    then lower the cap below what is spent: training and federation rounds are refused."""
    platform = Platform(get_settings())
    seed_music_tenant(platform, "shop", Region.EU, tmp_path)
    trained = train_tenant(platform, "shop", actor="t", epsilon=1.0, config=FAST)
    key = platform.control.issue_api_key("shop").api_key
    with TestClient(create_app(Region.EU, platform=platform, refresh=False)) as client:
        served = client.post(
            "/v1/recommendations",
            json={"user_id": "user-0", "k": 3},
            headers={"Authorization": f"Bearer {key}"},
        ).json()  # the app's shutdown writes the request log
    code, out, _ = cli(capsys, "audit", "lineage", "--request-id", served["request_id"], "--json")
    assert code == 0
    chain = json.loads(out)
    assert chain["model"]["version"] == trained.model_version == served["model_version"]
    assert chain["training"]["run"]["run_id"] == trained.lineage["dp"]["dp_run_id"]
    assert chain["training"]["run"]["status"] == "completed"
    release = chain["training"]["popularity_release"]  # the same run's count release
    assert release["kind"] == "popularity" and release["status"] == "completed"
    assert release["run_id"] == trained.lineage["dp"]["popularity_release"]["dp_run_id"]
    code, text, _ = cli(capsys, "audit", "lineage", "--request-id", served["request_id"])
    assert code == 0 and f"popularity prior: count release {release['run_id']}" in text
    page = templates.get_template("lineage.html").render(chain=chain, region="eu", who=None)
    assert f'count release <span class="mono">{release["run_id"]}</span>' in page  # as the CLI
    assert chain["data_snapshot"]["hash"] == trained.lineage["data_snapshot"]
    assert chain["data_snapshot"]["verified"]
    assert chain["backbone"]["note"] == NO_BACKBONE

    spent = chain["training"]["run"]["epsilon_total_after"]
    code, out, _ = cli(
        capsys, "privacy", "set-cap", "--tenant", "shop", "--epsilon", "0.5",
        "--reason", "incident review: freeze this tenant",
    )  # fmt: skip
    assert code == 0 and "0.5" in out and "stopped" in out and spent > 0.5
    code, _, err = cli(capsys, "train", "--tenant", "shop")
    assert code == 1 and "DP budget exhausted" in err
    code, _, err = cli(capsys, "train", "--tenant", "shop", "--epsilon", "0.1")
    assert code == 1 and "cap is 0.5" in err
    tenant = platform.control.get_tenant("shop")
    scope = Scope("shop", Region.EU)
    plane = platform.plane(Region.EU)
    with plane.session(scope, actor="t", action="t") as session:
        budget = DpRunTable(session, plane.ledger).budget(
            cap=tenant.epsilon_cap, delta=tenant.delta
        )
        with pytest.raises(BudgetExceededError):  # what a federated round's client charges
            budget.reserve(Charge(Mechanism(50.0, 0.01, 1), "federation"))
    restore = ("--tenant", "shop", "--epsilon", "5", "--reason", "review closed, cap restored")
    code, _, err = cli(capsys, "privacy", "set-cap", *restore)
    assert code == 1 and "is a request that a second officer approves" in err
    officers = Officers(platform.control.engine)
    for officer_id in ("po-a", "po-b"):
        password = officers.create(officer_id, role=OfficerRole.PLATFORM, regions=[Region.EU])
        monkeypatch.setenv("ATLASREC_OFFICER_PASSWORD", password.password)
        if officer_id == "po-a":
            code, out, _ = cli(capsys, "privacy", "request-raise", *restore, "--officer", "po-a")
            assert code == 0 and "0.5 -> 5 requested" in out
            assert platform.control.get_tenant("shop").epsilon_cap == 0.5  # not yet
    [request] = CapRequests(platform.control.engine).of_tenant("shop")
    decide = ("--request", request.id, "--officer", "po-b")
    code, out, _ = cli(capsys, "privacy", "decide-raise", *decide)
    assert code == 0 and "epsilon cap 0.5 -> 5" in out
    with plane.session(scope, actor="t", action="t") as session:
        budget = DpRunTable(session, plane.ledger).budget(cap=5.0, delta=tenant.delta)
        assert budget.fits(Mechanism(50.0, 0.01, 1))
    platform.close()


def test_a_model_trained_from_federated_rounds(tmp_path: Path, cli_home: Path) -> None:
    """The real federation's records (its rounds, backbone versions and charges) are what the
    chain follows: regional tenants federate twice, one trains from the backbone."""
    from server.embedded import run_embedded
    from server.federation import FederationConfig

    platform = Platform(get_settings())
    for tenant_id in ("shop-a", "shop-b"):
        seed_music_tenant(platform, tenant_id, Region.EU, tmp_path, sharing=SharingPolicy.REGIONAL)
    config = FederationConfig(rounds=2, round_epsilon=1.0, local_epochs=1, encrypt=False)
    federated = run_embedded(platform, Region.EU, config, actor="t")
    trained = train_tenant(platform, "shop-a", actor="t", epsilon=1.0, config=FAST)
    request_id = serve_record(platform, Scope("shop-a", Region.EU), trained.model_version)
    scope, row = find_request(platform, request_id, regions=[Region.EU], actor="t")
    chain = request_lineage(platform, scope, row, actor="t")
    backbone = chain["backbone"]
    assert backbone["version"] == federated.backbone_version
    assert set(backbone["contributors"]) == {"shop-a", "shop-b"}
    assert [r["round"] for r in backbone["rounds"]] == [1, 2]
    assert backbone["rounds"][0]["backbone_in"] is None
    assert backbone["rounds"][1]["backbone_in"] == backbone["rounds"][0]["backbone_out"]
    assert {r["federation_run"] for r in backbone["rounds"]} == {federated.run_id}
    assert all(r["participants"] == ["shop-a", "shop-b"] for r in backbone["rounds"])
    assert [r["details"]["round"] for r in backbone["tenant_rounds"]] == [1, 2]
    run = chain["training"]["run"]
    assert run["epsilon_total_after"] > run["epsilon_standalone"] + 0.5  # composed with rounds
    platform.close()
