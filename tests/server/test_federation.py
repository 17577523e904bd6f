"""Federated rounds with the real clients: DP training, ledgers, encryption, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from atlasrec.cli import main
from atlasrec.federation.store import open_backbone, region_store
from atlasrec.models.backbone import initial_backbone
from atlasrec.pipelines.privacy_report import privacy_report
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from server.embedded import run_embedded
from server.federation import FederationConfig
from tests.utils.factories import seed_music_tenant


@pytest.fixture
def eu_tenants(platform: Platform, tmp_path: Path) -> Platform:
    seed_music_tenant(platform, "shop", Region.EU, tmp_path, sharing=SharingPolicy.REGIONAL)
    seed_music_tenant(
        platform, "label", Region.EU, tmp_path, sharing=SharingPolicy.GLOBAL, epsilon_cap=1.6
    )
    seed_music_tenant(platform, "vault", Region.EU, tmp_path)  # solo
    return platform


def test_rounds_charge_each_participant_exactly_once_per_round(eu_tenants: Platform) -> None:
    config = FederationConfig(rounds=3, round_epsilon=1.0, local_epochs=1, min_participants=1)
    result = run_embedded(eu_tenants, Region.EU, config, actor="test")
    assert result.rounds_done == 3
    participants = [set(entry["participants"]) for entry in result.rounds]
    # label's cap (1.6) pays for two rounds of epsilon 1 (1.45 composed), not three (1.81)
    assert participants == [{"shop", "label"}, {"shop", "label"}, {"shop"}]
    assert "label" in result.rounds[2]["refused"]
    for tenant, rounds in (("shop", 3), ("label", 2)):
        report = privacy_report(eu_tenants, tenant, actor="test")
        runs = [r for r in report["runs"] if r["kind"] == "federation"]
        assert [r["round"] for r in runs] == list(range(1, rounds + 1))
        assert all(r["federation_run"] == result.run_id for r in runs)
        assert all(r["epsilon"] == pytest.approx(1.0, abs=0.01) for r in runs)
        assert report["epsilon_spent"] <= report["epsilon_cap"]
        assert report["epsilon_spent"] == pytest.approx(
            report["epsilon_spent_independent"], rel=0.05
        )
    vault = privacy_report(eu_tenants, "vault", actor="test")
    assert vault["runs"] == []  # the solo tenant never trained, never paid
    refusals = eu_tenants.plane(Region.EU).ledger.records(action="boundary.refused", limit=None)
    attempts = {(r.tenant_id, json.loads(r.details)["attempted"]) for r in refusals}
    assert ("vault", "federation.join") in attempts
    assert eu_tenants.plane(Region.EU).ledger.verify().ok


def test_the_published_backbone_is_the_average_of_what_clients_trained(
    eu_tenants: Platform,
) -> None:
    config = FederationConfig(rounds=1, local_epochs=1, min_participants=2)
    result = run_embedded(eu_tenants, Region.EU, config, actor="test")
    version = region_store(eu_tenants.settings, Region.EU).get(str(result.backbone_version))
    assert version.encrypted and set(version.metadata["contributors"]) == {"shop", "label"}
    weights = open_backbone(eu_tenants.settings, version)
    start = initial_backbone(config.seed)
    assert set(weights) == set(start)  # only the ID-free towers: no tenant residuals
    moved = max(float((weights[k] - start[k]).abs().max()) for k in weights)
    assert 0 < moved < 10  # trained, and a sane average (not a garbled decryption)
    assert all(np.isfinite(w.numpy()).all() for w in weights.values())


def test_federate_cli(cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    platform = Platform()
    try:
        seed_music_tenant(platform, "shop", Region.EU, tmp_path, sharing=SharingPolicy.REGIONAL)
        seed_music_tenant(platform, "label", Region.EU, tmp_path, sharing=SharingPolicy.REGIONAL)
    finally:
        platform.close()
    sys.argv = [
        "atlasrec",
        "federate",
        "--region",
        "eu",
        "--rounds",
        "1",
        "--local-epochs",
        "1",
        "--json",
    ]
    with pytest.raises(SystemExit) as exited:
        main()
    out = capsys.readouterr().out
    assert exited.value.code in (0, None)
    payload = json.loads(out[out.index("{") :])
    assert payload["rounds_done"] == 1 and payload["backbone_version"]
    assert set(payload["rounds"][0]["participants"]) == {"shop", "label"}


def test_only_a_new_federations_first_round_pretrains_on_content(
    eu_tenants: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clients.local

    calls: list[str] = []
    real = clients.local.pretrain_backbone

    def spy(content: np.ndarray, config: object, start: object) -> object:
        calls.append(f"{len(content)} items")
        return real(content, config, start)  # type: ignore[arg-type]

    monkeypatch.setattr(clients.local, "pretrain_backbone", spy)
    config = FederationConfig(rounds=2, local_epochs=1, min_participants=2)
    result = run_embedded(eu_tenants, Region.EU, config, actor="test")
    assert result.rounds_done == 2
    assert calls == ["30 items", "30 items"]  # round 1, each of shop and label; round 2: none
