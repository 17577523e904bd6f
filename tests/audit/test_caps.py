"""Changing a tenant's epsilon cap: validated, recorded in its region's ledger, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from atlasrec.errors import InvalidInputError, UnknownTenantError
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from audit.caps import CAP_CHANGED, CapConflictError, change_epsilon_cap
from tests.atlasrec.test_cli import cli
from tests.utils.audit import TRAIN, charge
from tests.utils.factories import make_tenant

REASON = "annual review by the privacy officer"


def cap_records(platform: Platform) -> list[dict[str, Any]]:
    records = platform.plane(Region.EU).ledger.records(action=CAP_CHANGED, limit=None)
    return [{"actor": r.actor, "tenant": r.tenant_id, **json.loads(r.details)} for r in records]


def test_a_change_is_applied_and_recorded(platform: Platform) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    charge(platform, scope, TRAIN, "train")
    change = change_epsilon_cap(platform, "shop", 4.0, reason=REASON, actor="officer:o1")
    assert (change.old_cap, change.new_cap, change.region) == (10.0, 4.0, "eu")
    assert platform.control.get_tenant("shop").epsilon_cap == 4.0
    [record] = cap_records(platform)
    assert record["actor"] == "officer:o1" and record["tenant"] == "shop"
    assert (record["old_cap"], record["new_cap"], record["reason"]) == (10.0, 4.0, REASON)
    assert record["spent"] == pytest.approx(change.spent) and change.spent > 0
    assert record["stops_training"] is False and not change.stops_training
    lowered = change_epsilon_cap(platform, "shop", change.spent / 2, reason=REASON, actor="o")
    assert lowered.stops_training and cap_records(platform)[-1]["stops_training"] is True
    assert platform.plane(Region.EU).ledger.verify().ok


BAD_INPUT = [
    ("abc", REASON, "field 'cap'"),
    (0.0, REASON, "field 'cap'"),
    (-1.0, REASON, "field 'cap'"),
    (float("nan"), REASON, "field 'cap'"),
    (float("inf"), REASON, "field 'cap'"),
    (1e6, REASON, "field 'cap'"),
    (5.0, "too short", "field 'reason'"),
    (5.0, "   ", "field 'reason'"),
    (5.0, "x" * 2001, "field 'reason'"),
]


def test_bad_input_changes_nothing(platform: Platform) -> None:
    make_tenant(platform, "shop", Region.EU)
    for cap, reason, message in BAD_INPUT:
        with pytest.raises(InvalidInputError, match=message):
            change_epsilon_cap(platform, "shop", cap, reason=reason, actor="o")
    assert platform.control.get_tenant("shop").epsilon_cap == 10.0 and cap_records(platform) == []


def test_unknown_tenant_and_stale_view(platform: Platform) -> None:
    with pytest.raises(UnknownTenantError):
        change_epsilon_cap(platform, "ghost", 1.0, reason=REASON, actor="o")
    make_tenant(platform, "shop", Region.EU)
    with pytest.raises(CapConflictError):
        change_epsilon_cap(platform, "shop", 1.0, reason=REASON, actor="o", expected_cap=3.0)
    assert platform.control.get_tenant("shop").epsilon_cap == 10.0 and cap_records(platform) == []


def test_a_failure_anywhere_leaves_neither_the_change_nor_its_record(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tenant(platform, "shop", Region.EU)
    ledger = platform.plane(Region.EU).ledger

    def control_fails(*_args: object, **_kwargs: object) -> bool:
        raise RuntimeError("control plane unreachable")

    with monkeypatch.context() as m:
        m.setattr(platform.control, "set_epsilon_cap", control_fails)
        with pytest.raises(RuntimeError):
            change_epsilon_cap(platform, "shop", 2.0, reason=REASON, actor="o")
    assert platform.control.get_tenant("shop").epsilon_cap == 10.0 and cap_records(platform) == []

    original = ledger.append

    def ledger_fails(**kwargs: Any) -> Any:
        raise RuntimeError("region database unreachable")

    with monkeypatch.context() as m:
        m.setattr(ledger, "append", ledger_fails)
        with pytest.raises(RuntimeError):
            change_epsilon_cap(platform, "shop", 2.0, reason=REASON, actor="o")
    assert platform.control.get_tenant("shop").epsilon_cap == 10.0 and cap_records(platform) == []

    def commit_fails(**kwargs: Any) -> Any:  # the record is written, then the commit fails
        record = original(**kwargs)

        def boom(_session: object) -> None:
            raise RuntimeError("commit failed")

        event.listen(kwargs["session"], "before_commit", boom, once=True)
        return record

    with monkeypatch.context() as m:
        m.setattr(ledger, "append", commit_fails)
        with pytest.raises(RuntimeError, match="commit failed"):
            change_epsilon_cap(platform, "shop", 2.0, reason=REASON, actor="o")
    assert platform.control.get_tenant("shop").epsilon_cap == 10.0  # put back
    assert cap_records(platform) == [] and ledger.verify().ok


def test_the_command_line(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "tenants", "create", "--id", "shop", "--region", "sg", "--sharing", "solo")
    code, out, _ = cli(
        capsys, "privacy", "set-cap", "--tenant", "shop", "--epsilon", "3", "--reason", REASON
    )
    assert code == 0 and out.startswith("shop@sg: epsilon cap 10 -> 3 (spent 0.000; 3.000 left)")
    code, out, _ = cli(capsys, "privacy", "report", "--tenant", "shop", "--json")
    assert json.loads(out)["epsilon_cap"] == 3.0
    for args, message in (
        (["--epsilon", "x", "--reason", REASON], "field 'cap'"),
        (["--epsilon", "2", "--reason", "short"], "field 'reason'"),
    ):
        code, _, err = cli(capsys, "privacy", "set-cap", "--tenant", "shop", *args)
        assert code == 1 and message in err and err.count("\n") == 1
