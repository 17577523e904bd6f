"""`train` from the federated backbone (cold start), on SQLite and PostgreSQL.

A federation round runs for real (`server.embedded.run_embedded`, encrypted), then tenants of
each sharing policy train; `train` is wrapped to capture the weights each run starts from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from atlasrec.artifacts import MANIFEST
from atlasrec.errors import InvalidInputError
from atlasrec.federation.store import (
    PAYLOAD,
    BackboneVersion,
    global_store,
    open_backbone,
    region_store,
)
from atlasrec.models import dp_run
from atlasrec.models.backbone import BACKBONE_CONFIG, initial_backbone
from atlasrec.models.bundle import KIND, ModelBundle
from atlasrec.models.ranking import fit as ranking
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines import train as train_pipeline
from atlasrec.pipelines.privacy_report import privacy_report
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope, SharingPolicy
from server.embedded import run_embedded
from server.federation import FederationConfig, FederationResult
from tests.utils.factories import seed_music_tenant

FAST = TwoTowerConfig(
    dim=16, hidden=32, history=10, positives=4, negatives=16, epochs=2, batch_size=8
)
Starts = list[dict[str, torch.Tensor] | None]


def federate(platform: Platform, folder: Path) -> FederationResult:
    """Region eu: `shop` (regional) and `label` (global) take part, `vault` (solo) refuses."""
    seed_music_tenant(platform, "shop", Region.EU, folder, sharing=SharingPolicy.REGIONAL)
    seed_music_tenant(platform, "label", Region.EU, folder, sharing=SharingPolicy.GLOBAL)
    seed_music_tenant(platform, "vault", Region.EU, folder)
    return run_embedded(platform, Region.EU, FederationConfig(rounds=1, local_epochs=1), actor="t")


def capture(monkeypatch: pytest.MonkeyPatch, module: Any) -> Starts:
    """Wrap `module.train` (the real one still runs); record each call's `init_backbone`."""
    starts: Starts = []
    real: Callable[..., Any] = module.train

    def spy(*args: Any, **kwargs: Any) -> Any:
        starts.append(kwargs.get("init_backbone"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "train", spy)
    return starts


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_regional_and_global_tenants_start_from_the_regions_backbone(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = federate(platform, tmp_path)
    latest = region_store(platform.settings, Region.EU).latest()
    assert latest is not None and result.backbone_version == latest.version
    backbone = open_backbone(platform.settings, latest)
    assert not same_weights(backbone, initial_backbone(0))  # the round moved it
    [entry] = result.rounds
    epsilons = {t: p["epsilon"] for t, p in entry["participants"].items()}
    assert set(epsilons) == {"shop", "label"}

    dp_starts = capture(monkeypatch, dp_run)
    shop = train_tenant(platform, "shop", actor="t", epsilon=1.0, config=FAST)
    [start] = dp_starts
    assert start is not None and same_weights(start, backbone)
    assert shop.lineage["parent_backbone"] == {
        "version": latest.version,
        "domain": "region-eu",
        "region": "eu",
        "federation_run": result.run_id,
        "round": 1,
        "contributors": pytest.approx(epsilons),
    }
    hyper = shop.lineage["hyperparameters"]
    assert (hyper["hidden"], hyper["dim"]) == (BACKBONE_CONFIG.hidden, BACKBONE_CONFIG.dim)
    [trained] = platform.plane(Region.EU).ledger.records(action="model.trained")
    assert json.loads(trained.details)["parent_backbone"] == f"region-eu/{latest.version}"

    # a global tenant takes its region's backbone over the cross-region one
    assert global_store(platform.settings).latest() is not None
    dp_starts.clear()
    label = train_tenant(platform, "label", actor="t", epsilon=1.0, config=FAST)
    [start] = dp_starts
    assert start is not None and same_weights(start, backbone)
    assert label.lineage["parent_backbone"]["version"] == latest.version
    scope = Scope("label", Region.EU)
    artifact = platform.plane(Region.EU).artifacts.latest(scope, KIND, actor="t")
    assert artifact is not None and artifact.manifest["metadata"] == label.lineage
    assert ModelBundle.load(artifact).model.config.hidden == BACKBONE_CONFIG.hidden

    # a no-DP run (tenant-local, with residuals) trains its own towers: the backbone never
    # helped those (docs/benchmarks.md, cold start)
    plain_starts = capture(monkeypatch, ranking)
    plain = train_tenant(platform, "label", actor="t", no_dp=True, config=FAST)
    assert plain_starts == [None, None]  # both trainings of the ranker path
    assert plain.lineage["parent_backbone"] is None
    assert plain.lineage["hyperparameters"]["hidden"] == FAST.hidden

    # solo never takes it; a regional tenant may opt out
    dp_starts.clear()
    vault = train_tenant(platform, "vault", actor="t", epsilon=1.0, config=FAST)
    opted_out = train_tenant(
        platform, "shop", actor="t", epsilon=1.0, config=FAST, no_backbone=True
    )
    assert dp_starts == [None, None]
    assert vault.lineage["parent_backbone"] is None
    assert opted_out.lineage["parent_backbone"] is None
    assert opted_out.lineage["hyperparameters"]["hidden"] == BACKBONE_CONFIG.hidden  # DP towers


def test_other_regions_global_falls_back_to_the_global_tier_regional_does_not(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    federate(platform, tmp_path)
    combined = global_store(platform.settings).latest()
    assert combined is not None and combined.metadata["contributors"].keys() == {"label"}
    seed_music_tenant(platform, "far", Region.SG, tmp_path, sharing=SharingPolicy.GLOBAL)
    seed_music_tenant(platform, "near", Region.SG, tmp_path, sharing=SharingPolicy.REGIONAL)
    starts = capture(monkeypatch, dp_run)
    far = train_tenant(platform, "far", actor="t", epsilon=1.0, config=FAST)
    near = train_tenant(platform, "near", actor="t", epsilon=1.0, config=FAST)
    assert starts[0] is not None
    assert same_weights(starts[0], open_backbone(platform.settings, combined))
    parent = far.lineage["parent_backbone"]
    assert parent["domain"] == parent["region"] == "global"
    assert parent["version"] == combined.version
    assert parent["shares"] == combined.metadata["shares"] and "eu" in parent["shares"]
    assert starts[1] is None and near.lineage["parent_backbone"] is None


def _corrupt(version: BackboneVersion, *, fix_checksum: bool) -> None:
    path = version.path / PAYLOAD
    data = bytearray(path.read_bytes())
    data[:16] = b"\x00" * 16
    path.write_bytes(bytes(data))
    if fix_checksum:  # a payload that passes the manifest's hash but is no ciphertext
        manifest_path = version.path / MANIFEST
        manifest = json.loads(manifest_path.read_text())
        manifest["files"][PAYLOAD] = hashlib.sha256(data).hexdigest()
        manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("fix_checksum", "reason"), [(False, "fails its checksum"), (True, "not an encrypted vector")]
)
def test_a_damaged_backbone_fails_clearly_before_anything_is_charged_or_published(
    platform: Platform, tmp_path: Path, fix_checksum: bool, reason: str
) -> None:
    federate(platform, tmp_path)
    latest = region_store(platform.settings, Region.EU).latest()
    assert latest is not None
    _corrupt(latest, fix_checksum=fix_checksum)
    runs_before = privacy_report(platform, "shop", actor="t")["runs"]
    with pytest.raises(InvalidInputError, match=f"cannot open backbone region-eu/.*{reason}"):
        train_tenant(platform, "shop", actor="t", epsilon=1.0, config=FAST)
    assert privacy_report(platform, "shop", actor="t")["runs"] == runs_before
    scope = Scope("shop", Region.EU)
    assert platform.plane(Region.EU).artifacts.versions(scope, KIND, actor="t") == []
    assert platform.plane(Region.EU).ledger.records(action="model.trained") == []
    # the way out the message names: train without the backbone
    result = train_tenant(platform, "shop", actor="t", epsilon=1.0, config=FAST, no_backbone=True)
    assert result.lineage["parent_backbone"] is None


def test_cli_train_reports_its_backbone_and_can_opt_out(
    cli_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.atlasrec.test_cli import cli
    from tests.utils.factories import (
        INTERACTIONS_HEADER,
        ITEMS_HEADER,
        MUSIC_ITEMS,
        music_interactions,
        write_csv,
    )

    items = write_csv(tmp_path / "items.csv", ITEMS_HEADER, MUSIC_ITEMS)
    inter = write_csv(tmp_path / "inter.csv", INTERACTIONS_HEADER, music_interactions())
    cli(capsys, "tenants", "create", "--id", "shop", "--region", "eu", "--sharing", "regional")
    cli(capsys, "ingest", "--tenant", "shop", "--items", str(items), "--interactions", str(inter))
    code, out, err = cli(
        capsys, "federate", "--region", "eu", "--rounds", "1", "--min-participants", "1", "--json"
    )
    assert code == 0, err
    version = json.loads(out)["backbone_version"]
    monkeypatch.setattr(train_pipeline, "TwoTowerConfig", lambda: FAST)  # the CLI's default, faster
    code, out, err = cli(capsys, "train", "--tenant", "shop", "--epsilon", "1")
    assert code == 0, err
    assert f"from backbone region-eu/{version}" in out
    code, out, err = cli(capsys, "train", "--tenant", "shop", "--epsilon", "1", "--no-backbone")
    assert code == 0, err
    assert "from fresh towers" in out
