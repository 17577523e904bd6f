"""Drift of a tenant's traffic since its model's training snapshot: the checks, their ledger
records, the flags of `atlasrec monitor status`, retrain candidates and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from atlasrec.datasets.synthetic import SyntheticTenantSpec, generate_synthetic_tenant
from atlasrec.drift import CHECKED, ModelUnreadableError, check_drift, latest_drift, tenant_drift
from atlasrec.ingest import ingest
from atlasrec.models.bundle import KIND, WEIGHTS
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.monitor import monitor_status
from atlasrec.pipelines.retrain import retrain_stale
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope, SharingPolicy
from tests.atlasrec.test_cli import cli

EU = Region.EU
FAST = TwoTowerConfig(dim=16, hidden=32, history=10, positives=4, negatives=16, epochs=1)
SPEC = SyntheticTenantSpec(
    "retail", EU, SharingPolicy.SOLO, n_items=300, n_users=400, n_interactions=4_000
)
TRAINED = 2_400
"""Interactions ingested before the model is trained (the rest arrive after)."""


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


@pytest.fixture
def retail(platform: Platform, tmp_path: Path) -> tuple[Platform, list[str], list[list[str]]]:
    """A trained synthetic tenant; its header and the interactions that came after training."""
    data = generate_synthetic_tenant(SPEC, tmp_path)
    header, *rows = _rows(data.interactions_csv)
    platform.create_tenant("retail", region=EU, sharing=SharingPolicy.SOLO, actor="test")
    _ingest(platform, data.items_csv, _write(tmp_path / "trained.csv", header, rows[:TRAINED]))
    train_tenant(platform, "retail", actor="test", no_dp=True, config=FAST)
    return platform, header, rows[TRAINED:]


def _ingest(platform: Platform, items: Path | None, interactions: Path) -> None:
    scope = Scope("retail", EU)
    plane = platform.plane(EU)
    ingest(
        plane, scope, secret=platform.secret, actor="test", items=items, interactions=interactions
    )


def _shifted(rows: list[list[str]], items: list[str], share: float) -> list[list[str]]:
    """`share` of the rows moved to `items` (a surge in one category)."""
    rng = np.random.default_rng(7)
    return [[r[0], str(rng.choice(items)), *r[2:]] if rng.random() < share else r for r in rows]


def test_unshifted_traffic_shows_no_drift_and_a_shift_is_found_and_recorded(
    retail: tuple[Platform, list[str], list[list[str]]], tmp_path: Path
) -> None:
    platform, header, after = retail
    half = len(after) // 2
    _ingest(platform, None, _write(tmp_path / "same.csv", header, after[:half]))
    report = tenant_drift(platform, "retail", actor="test")
    statuses = {s["signal"]: s["status"] for s in report.signals}
    assert statuses == {
        "item_popularity": "ok",
        "category_mix": "ok",
        "user_activity": "ok",
        "request_embeddings": "ok",
        "scores": "ok",
    }
    assert report.signals[0]["reference_n"] == report.signals[0]["current_n"] == half

    catalog = _rows(tmp_path / "retail" / "items.csv")[1:]
    garden = [item_id for item_id, _, category, *_ in catalog if category == catalog[0][2]]
    shifted = _shifted(after[half:], garden, share=0.5)
    _ingest(platform, None, _write(tmp_path / "shifted.csv", header, shifted))
    checked = check_drift(platform, "retail", actor="test")
    assert {"item_popularity", "category_mix"} <= set(checked.drifted)
    recorded = latest_drift(platform, EU)["retail"]
    assert recorded == checked
    assert platform.plane(EU).ledger.records(action=CHECKED)[-1].tenant_id == "retail"

    status = monitor_status(platform, EU, actor="test")["tenants"][0]
    assert "drift_category_mix" in status["flags"] and status["drift"]["drifted"]
    submitted: list[str] = []
    decisions = retrain_stale(platform, EU, actor="test", submit=submitted.append)
    assert submitted == ["retail"] and decisions[0]["trigger"].startswith("drift: ")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_tenant_without_a_model_gets_no_verdict_and_no_record(platform: Platform) -> None:
    platform.create_tenant("bare", region=EU, sharing=SharingPolicy.SOLO, actor="test")
    report = check_drift(platform, "bare", actor="test")
    assert report.model_version is None and report.signals == [] and not report.drifted
    assert latest_drift(platform, EU) == {}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_monitor_drift_prints_every_signal_and_unknown_tenants_get_one_line(
    retail: tuple[Platform, list[str], list[list[str]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    platform, header, after = retail
    _ingest(platform, None, _write(tmp_path / "after.csv", header, after))
    monkeypatch.setattr("atlasrec.cli.monitor.open_platform", lambda: platform)
    code, out, _ = cli(capsys, "monitor", "drift", "--tenant", "retail", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["tenant_id"] == "retail" and len(shown["signals"]) == 5
    code, out, _ = cli(capsys, "monitor", "drift", "--tenant", "retail")
    assert code == 0 and "no drift" in out and "category_mix" in out
    code, _, err = cli(capsys, "monitor", "drift", "--tenant", "nobody")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "nobody" in err


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_unreadable_model_is_reported_unverified_in_one_line(
    retail: tuple[Platform, list[str], list[list[str]]],
) -> None:
    platform, _, _ = retail
    scope = Scope("retail", EU)
    model = platform.plane(EU).artifacts.latest(scope, KIND, actor="test")
    assert model is not None
    (model.path / WEIGHTS).write_bytes(b"not a model")
    with pytest.raises(ModelUnreadableError, match="unverified") as raised:
        check_drift(platform, "retail", actor="test")
    assert "retail" in str(raised.value) and "\n" not in str(raised.value)
    assert latest_drift(platform, EU) == {}  # nothing recorded as if checked
