"""The hash-chained ledger: intact chains verify; any edit, deletion or reordering is named."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region
from audit.ledger import AuditLedger

REGION = Region.EU


@contextmanager
def tamper(ledger: AuditLedger) -> Any:
    """A raw connection with the append-only triggers off, as an attacker with DB access."""
    with ledger.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_records DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_records_no_update"))
            conn.execute(text("DROP TRIGGER audit_records_no_delete"))
        yield conn
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_records ENABLE TRIGGER USER"))


def fill(ledger: AuditLedger, n: int) -> None:
    for k in range(n):
        ledger.append(
            actor="test",
            action="test.event",
            subject=f"s{k}",
            tenant_id="t1",
            details={"k": k, "note": "ünïcode"},
        )


@pytest.fixture
def ledger(platform: Platform) -> AuditLedger:
    return platform.plane(REGION).ledger


def test_intact_chain_verifies(ledger: AuditLedger) -> None:
    fill(ledger, 5)
    result = ledger.verify()
    assert result.ok and result.records == 5


def test_empty_ledger_verifies(ledger: AuditLedger) -> None:
    assert ledger.verify().ok


EDITS: dict[str, Callable[[Connection], None]] = {
    "details": lambda c: c.execute(
        text("UPDATE audit_records SET details=:d WHERE seq=3"), {"d": '{"k":99}'}
    ),
    "actor": lambda c: c.execute(text("UPDATE audit_records SET actor='mallory' WHERE seq=3")),
    "tenant": lambda c: c.execute(text("UPDATE audit_records SET tenant_id='t2' WHERE seq=3")),
    "ts": lambda c: c.execute(text("UPDATE audit_records SET ts='2020-01-01' WHERE seq=3")),
}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_one_field_edit_names_the_record(ledger: AuditLedger, field: str) -> None:
    fill(ledger, 6)
    with tamper(ledger) as conn:
        EDITS[field](conn)
    result = ledger.verify()
    assert not result.ok
    assert result.first_bad_seq == 3
    assert "edited" in result.reason


def test_deleting_a_middle_record_is_named(ledger: AuditLedger) -> None:
    fill(ledger, 6)
    with tamper(ledger) as conn:
        conn.execute(text("DELETE FROM audit_records WHERE seq=4"))
    result = ledger.verify()
    assert (result.ok, result.first_bad_seq) == (False, 4)


def test_renumbering_after_deletion_is_caught(ledger: AuditLedger) -> None:
    fill(ledger, 6)
    with tamper(ledger) as conn:
        conn.execute(text("DELETE FROM audit_records WHERE seq=2"))
        for seq in range(3, 7):
            conn.execute(text(f"UPDATE audit_records SET seq={seq - 1} WHERE seq={seq}"))
    result = ledger.verify()
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_reordering_two_records_is_caught(ledger: AuditLedger) -> None:
    fill(ledger, 6)
    with tamper(ledger) as conn:
        conn.execute(text("UPDATE audit_records SET seq=-1 WHERE seq=2"))
        conn.execute(text("UPDATE audit_records SET seq=2 WHERE seq=3"))
        conn.execute(text("UPDATE audit_records SET seq=3 WHERE seq=-1"))
    result = ledger.verify()
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_cutting_the_tail_is_caught_by_the_anchor(ledger: AuditLedger) -> None:
    fill(ledger, 6)
    with tamper(ledger) as conn:
        conn.execute(text("DELETE FROM audit_records WHERE seq>=5"))
    result = ledger.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert "cut from the end" in result.reason


def test_rewriting_the_whole_chain_is_caught_by_the_anchor(ledger: AuditLedger) -> None:
    fill(ledger, 3)
    with tamper(ledger) as conn:
        conn.execute(text("DELETE FROM audit_records"))
    forged = AuditLedger(REGION, ledger.engine, anchor=None)  # a forger cannot move the anchor
    fill(forged, 3)
    result = ledger.verify()
    assert not result.ok and result.first_bad_seq == 3


def test_append_only_triggers_refuse_update_and_delete(ledger: AuditLedger) -> None:
    fill(ledger, 2)
    for statement in (
        "UPDATE audit_records SET actor='x' WHERE seq=1",
        "DELETE FROM audit_records WHERE seq=1",
    ):
        with pytest.raises(DBAPIError, match="append-only"), ledger.engine.begin() as conn:
            conn.execute(text(statement))
    assert ledger.verify().ok


def test_concurrent_appends_keep_one_chain(ledger: AuditLedger) -> None:
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for k in range(10):
                ledger.append(actor=f"w{w}", action="test.concurrent", subject=f"{w}-{k}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = ledger.verify()
    assert result.ok and result.records == 40


def test_details_with_undecodable_text_are_stored_and_verified(ledger: AuditLedger) -> None:
    name = b"caf\xe9.csv".decode("utf-8", "surrogateescape")  # as os.listdir returns it
    ledger.append(actor="a", action="ingest.rejected", subject="x", details={"file": name})
    [record] = ledger.records()
    assert "\\udce9" in record.details
    assert ledger.verify().ok


def test_records_filter_by_tenant_and_action(ledger: AuditLedger) -> None:
    ledger.append(actor="a", action="ingest", subject="x", tenant_id="t1")
    ledger.append(actor="a", action="ingest.rejected", subject="x", tenant_id="t2")
    ledger.append(actor="a", action="tenant.created", subject="x", tenant_id="t1")
    assert [r.seq for r in ledger.records(tenant_id="t1")] == [1, 3]
    assert [r.seq for r in ledger.records(action="ingest")] == [1, 2]


@given(n=st.integers(2, 12), data=st.data())
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_single_edit_is_named(
    make_settings: Callable[..., Settings], n: int, data: st.DataObject
) -> None:
    platform = Platform(make_settings())
    try:
        ledger = platform.plane(REGION).ledger
        fill(ledger, n)
        seq = data.draw(st.integers(1, n), label="seq")
        column = data.draw(st.sampled_from(["subject", "actor", "action", "details"]), label="col")
        value = data.draw(
            st.text(
                st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20
            ),
            label="value",
        )
        original = ledger.records(after_seq=seq - 1, limit=1)[0]
        if getattr(original, column) == value:
            value += "!"
        with tamper(ledger) as conn:
            conn.execute(
                text(f"UPDATE audit_records SET {column}=:v WHERE seq=:s"), {"v": value, "s": seq}
            )
        result = ledger.verify()
        assert (result.ok, result.first_bad_seq) == (False, seq)
    finally:
        platform.close()
