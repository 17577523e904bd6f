"""The empirical audit of DP releases: recorded once per release, shown next to the claim in
`atlasrec privacy report`, refused for models without DP, and an alarm when it falsifies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlasrec.errors import InvalidInputError, NotFoundError
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.monitor import monitor_status
from atlasrec.pipelines.privacy_report import privacy_report
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.privacy_audit import AUDITED, audit_alarms, audit_pending, audit_release
from atlasrec.tenancy import Region, Scope
from tests.atlasrec.test_cli import cli
from tests.utils.factories import seed_music_tenant

FAST = TwoTowerConfig(
    dim=16, hidden=32, history=10, positives=4, negatives=16, epochs=3, batch_size=8
)
SG = Region.SG


@pytest.fixture
def shop(platform: Platform, tmp_path: Path) -> Scope:
    return seed_music_tenant(platform, "shop", SG, tmp_path, epsilon_cap=6.0)


def _train_run(platform: Platform) -> dict[str, object]:
    runs = privacy_report(platform, "shop", actor="t")["runs"]
    return next(r for r in runs if r["kind"] == "train")


def test_each_dp_release_is_audited_once_and_reported_beside_its_claim(
    platform: Platform, shop: Scope
) -> None:
    with pytest.raises(NotFoundError, match="no model"):
        audit_release(platform, "shop", actor="t")
    version = train_tenant(platform, "shop", actor="t", epsilon=2.0, config=FAST).model_version
    assert _train_run(platform)["audit"] == {"status": "pending"}
    [done] = audit_pending(platform, SG, actor="t")
    assert done["model_version"] == version and audit_pending(platform, SG, actor="t") == []
    audit = _train_run(platform)["audit"]
    assert isinstance(audit, dict) and audit["status"] == "audited"
    assert 0.0 <= audit["epsilon_lower_bound"] < audit["claimed_epsilon"] <= 2.0
    assert audit["canaries"] >= 2 and 0.0 <= audit["control"]["auc"] <= 1.0
    records = platform.plane(SG).ledger.records(action=AUDITED, limit=None)
    assert [json.loads(r.details)["model_version"] for r in records] == [version]
    assert audit_alarms(platform, SG) == {"shop": False}


def test_a_model_without_dp_has_no_claim_to_audit(platform: Platform, shop: Scope) -> None:
    train_tenant(platform, "shop", actor="t", no_dp=True, config=FAST)
    with pytest.raises(InvalidInputError, match="without DP"):
        audit_release(platform, "shop", actor="t")
    assert audit_pending(platform, SG, actor="t") == []


def test_a_bound_above_the_claim_is_an_alarm_in_monitor_status(
    platform: Platform, shop: Scope
) -> None:
    version = train_tenant(platform, "shop", actor="t", epsilon=2.0, config=FAST).model_version
    platform.plane(SG).ledger.append(
        actor="t",
        action=AUDITED,
        subject=f"model:model/{version}",
        tenant_id="shop",
        details={"model_version": version, "alarm": True, "claimed_epsilon": 1.0},
    )
    assert audit_alarms(platform, SG) == {"shop": True}
    [tenant] = monitor_status(platform, SG, actor="t")["tenants"]
    assert "privacy_audit_alarm" in tenant["flags"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_privacy_audit_and_report_on_the_command_line(
    platform: Platform,
    shop: Scope,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in ("atlasrec.cli.privacy",):
        monkeypatch.setattr(f"{module}.open_platform", lambda: platform)
    train_tenant(platform, "shop", actor="t", epsilon=2.0, config=FAST)
    code, out, _ = cli(capsys, "privacy", "report", "--tenant", "shop")
    assert code == 0 and "empirical audit: pending" in out
    code, out, _ = cli(capsys, "privacy", "audit", "--tenant", "shop", "--json")
    assert code == 0 and json.loads(out)["alarm"] is False
    code, out, _ = cli(capsys, "privacy", "report", "--tenant", "shop")
    assert code == 0 and "below the claim" in out and "without DP" in out
    code, _, err = cli(capsys, "privacy", "audit", "--tenant", "nobody")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "nobody" in err
