"""The command-line contract: commands, JSON outputs, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from atlasrec.cli import main
from atlasrec.platform import Platform
from simulations.clicks import load_sim_tenant
from tests.utils.factories import ITEMS_HEADER, items_rows, tenant_files, write_csv

CONTRACT = [
    "tenants",
    "ingest",
    "train",
    "federate",
    "evaluate",
    "recommend",
    "serve",
    "privacy",
    "audit",
    "demo",
]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    sys.argv = ["atlasrec", *args]
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        os.umask(umask)  # main() narrows the process's mask: keep it to this call
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_help_lists_every_contract_command(
    cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    for command in CONTRACT:
        assert f" {command} " in out
    for group, subs in (("tenants", ["create"]), ("privacy", ["report"]), ("audit", ["verify"])):
        code, out, _ = cli(capsys, group, "--help")
        assert code == 0 and all(f" {s} " in out for s in subs)


def test_tenants_create_prints_json_with_the_key_once(
    cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        capsys,
        "tenants",
        "create",
        "--id",
        "acme",
        "--region",
        "eu",
        "--sharing",
        "global",
        "--epsilon",
        "3.5",
    )
    assert code == 0
    created = json.loads(out)
    assert (
        created["tenant_id"],
        created["region"],
        created["sharing"],
        created["epsilon_cap"],
    ) == ("acme", "eu", "global", 3.5)
    assert created["api_key"].startswith("ark_")
    code, out, _ = cli(capsys, "tenants", "list", "--json")
    assert code == 0 and "api_key" not in out and json.loads(out)[0]["tenant_id"] == "acme"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["tenants", "create", "--id", "acme", "--region", "mars", "--sharing", "solo"],
            "unknown region 'mars'",
        ),
        (
            ["tenants", "create", "--id", "acme", "--region", "eu", "--sharing", "open"],
            "unknown sharing policy",
        ),
        (
            [
                "tenants",
                "create",
                "--id",
                "acme",
                "--region",
                "eu",
                "--sharing",
                "solo",
                "--epsilon",
                "0",
            ],
            "--epsilon",
        ),
        (["ingest", "--tenant", "ghost", "--items", "x.csv"], "unknown tenant 'ghost'"),
        (["ingest", "--tenant", "ghost"], "give --items and/or --interactions"),
        (["train", "--tenant", "acme"], "unknown tenant 'acme'"),
        (["federate", "--region", "eu", "--rounds", "1"], "region 'eu' has no tenants"),
        (["federate", "--region", "eu", "--rounds", "0"], "--rounds must be at least 1"),
        (["federate", "--region", "xx"], "unknown region 'xx'"),
        (["evaluate", "--tenant", "acme", "--k", "10", "--json"], "unknown tenant 'acme'"),
        (
            ["recommend", "--tenant", "acme", "--users-file", "u.txt", "--k", "5"],
            "cannot read users file",
        ),
        (["serve", "--region", "xx"], "unknown region 'xx'"),
        (["privacy", "report", "--tenant", "acme", "--json"], "unknown tenant 'acme'"),
        (["audit", "verify", "--region", "xx"], "unknown region 'xx'"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    cli_home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = cli(capsys, *args)
    assert code == 1
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_malformed_csv_names_the_row_and_leaves_nothing(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "tenants", "create", "--id", "shop", "--region", "in", "--sharing", "solo")
    items = write_csv(tmp_path / "items.csv", ITEMS_HEADER, items_rows(3))
    bad = tmp_path / "interactions.csv"
    bad.write_text("user_id,item_id,timestamp\nu1,i1,1700000000\nu2,i2,oops\n")
    code, _, err = cli(
        capsys, "ingest", "--tenant", "shop", "--items", str(items), "--interactions", str(bad)
    )
    assert code == 1
    assert err.strip() == (
        "error: tenant 'shop': interactions.csv line 3: field 'timestamp': "
        "'oops' is neither epoch seconds nor ISO 8601"
    )
    db = sqlite3.connect(cli_home / "regions" / "in" / "data.db")
    assert db.execute("SELECT count(*) FROM items").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM ingest_batches").fetchone() == (0,)
    assert not list((cli_home / "offline").rglob("*.parquet"))  # nothing published


def test_ingest_json_and_audit_verify_after_a_one_field_edit(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "tenants", "create", "--id", "shop", "--region", "us", "--sharing", "regional")
    items, inter = tenant_files(tmp_path)
    code, out, _ = cli(
        capsys,
        "ingest",
        "--tenant",
        "shop",
        "--items",
        str(items),
        "--interactions",
        str(inter),
        "--json",
    )
    assert code == 0 and json.loads(out)["items"]["written"] == 10
    code, out, _ = cli(capsys, "audit", "verify", "--region", "us")
    assert code == 0 and "intact (2 records)" in out

    db = sqlite3.connect(cli_home / "regions" / "us" / "data.db")
    db.execute("DROP TRIGGER audit_records_no_update")
    db.execute("UPDATE audit_records SET actor = 'someone-else' WHERE seq = 1")
    db.commit()
    code, _, err = cli(capsys, "audit", "verify", "--region", "us")
    assert code == 1
    assert "seq=1" in err and "edited" in err


def test_process_pinned_to_a_region_refuses_foreign_tenants(
    cli_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from atlasrec.settings import get_settings

    cli(capsys, "tenants", "create", "--id", "shop", "--region", "eu", "--sharing", "solo")
    items, _ = tenant_files(tmp_path)
    monkeypatch.setenv("ATLASREC_REGION", "us")
    get_settings.cache_clear()
    code, _, err = cli(capsys, "ingest", "--tenant", "shop", "--items", str(items))
    assert code == 1 and "homed in region 'eu', not 'us'" in err
    code, out, _ = cli(capsys, "audit", "log", "--region", "us", "--action", "boundary", "--json")
    assert code == 0 and json.loads(out)[0]["tenant_id"] == "shop"


@pytest.mark.timeout(900)  # two demo runs in subprocesses
def test_demo_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLASREC_")}
    env["ATLASREC_HOME"] = str(tmp_path / "demo-home")
    run = subprocess.run(
        [sys.executable, "-m", "atlasrec", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    for tenant in ("ml-family", "ml-drama", "ml-docs", "ml-western"):
        assert tenant in run.stdout
    for region in ("us", "eu", "in", "sg"):
        assert f"region {region}: audit chain intact" in run.stdout
    assert "Training (user-level DP" in run.stdout
    assert "Federated backbone" in run.stdout and "ml-thrill (solo)" in run.stdout
    assert "global backbone" in run.stdout
    assert "refused" in run.stdout
    # the privacy officer's part: a request followed back, reports, credentials and the UI
    assert "lineage of" in run.stdout and "data snapshot" in run.stdout
    assert "officer privacy-officer / " in run.stdout and "/audit/" in run.stdout
    officers = tmp_path / "demo-home" / "demo-officers.json"
    assert officers.stat().st_mode & 0o777 == 0o600
    home = tmp_path / "demo-home"
    shared = [p for p in [home, *home.rglob("*")] if p.stat().st_mode & 0o077]
    assert shared == []  # databases, artifacts, Parquet, reports: the owner's only
    assert home.stat().st_mode & 0o777 == 0o700
    reports = sorted(p.name for p in (tmp_path / "demo-home" / "reports").iterdir())
    assert "ml-docs-in-compliance.csv" in reports and len(reports) == 7 * 3
    again = subprocess.run(
        [sys.executable, "-m", "atlasrec", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert "training ml-" in run.stdout and "training ml-" not in again.stdout  # no re-spend
    assert "3.99 / 10" in again.stdout or "4.00 / 10" in again.stdout


def test_the_listing_summaries_are_the_commands_own() -> None:
    from atlasrec.cli import COMMANDS

    for name, spec in COMMANDS.items():
        command = spec.load(name)
        assert command.name == name
        assert (command.help or "").split("\n\n")[0].strip() == spec.summary


def test_tenants_fallback_refuses_a_solo_tenant_and_unclear_flags_in_one_line(
    cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "tenants", "create", "--id", "lone", "--region", "eu", "--sharing", "solo")
    code, _, err = cli(capsys, "tenants", "fallback", "--tenant", "lone", "--region", "us")
    assert code != 0 and "shares 'solo'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "tenants", "fallback", "--tenant", "lone", "--off", "--refresh")
    assert code != 0 and "exactly one of" in err
    code, _, err = cli(capsys, "tenants", "fallback", "--tenant", "nobody", "--off")
    assert code != 0 and "nobody" in err and len(err.strip().splitlines()) == 1


def test_tenants_event_types_set_show_clear_and_refuse_in_one_line(
    cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "tenants", "create", "--id", "shop", "--region", "eu", "--sharing", "solo")
    code, out, _ = cli(
        capsys, "tenants", "event-types", "--tenant", "shop", "--set", "wishlist=0.3"
    )
    assert code == 0 and json.loads(out)["accepted"]["wishlist"] == 0.3
    code, out, _ = cli(capsys, "tenants", "event-types", "--tenant", "shop")
    assert json.loads(out)["own"] == {"wishlist": 0.3} and "purchase" in json.loads(out)["accepted"]
    code, _, err = cli(capsys, "tenants", "event-types", "--tenant", "shop", "--set", "Bad=1")
    assert code != 0 and "'Bad'" in err and len(err.strip().splitlines()) == 1
    code, out, _ = cli(capsys, "tenants", "event-types", "--tenant", "shop", "--clear")
    assert code == 0 and json.loads(out)["own"] == {}
    code, out, _ = cli(capsys, "monitor", "outcomes", "--tenant", "shop")
    assert code == 0 and "no request served in the last 2 day(s)" in out
    code, _, err = cli(capsys, "monitor", "outcomes", "--tenant", "shop", "--days", "0")
    assert code != 0 and "days must be 1 to 90" in err


def test_simulate_tenant_keeps_its_hidden_share_for_the_click_simulator(
    cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["simulate", "tenant", "--id", "sim-a", "--region", "eu", "--users", "40"]
    code, out, err = cli(capsys, *args, "--items", "30", "--interactions", "400")
    assert code == 0, err
    assert json.loads(out)["hidden_share"] == 0.5
    assert load_sim_tenant(Platform(), "sim-a").spec.hidden_share == 0.5
    code, _, err = cli(capsys, *args[:3], "sim-b", *args[4:], "--hidden-share", "2")
    assert code != 0 and "hidden_share must be in [0, 1]" in err
