"""Interactions ingest into the offline store: staging, the publish journal, crashes, dedupe,
line numbers, conversions, and how ingested rows live beside logged events."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sqlalchemy import func
from sqlmodel import select

from atlasrec import offline_ingest
from atlasrec.dataplane.tables import IngestBatch
from atlasrec.dataplane.training_data import load_tenant_dataset
from atlasrec.errors import IngestError
from atlasrec.eventlog.records import LogEvent
from atlasrec.ingest import ingest
from atlasrec.ingest.interactions import event_ids
from atlasrec.offline_store import INGEST, TenantOffline, journals
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope
from tests.utils.factories import (
    INTERACTIONS_HEADER,
    ITEMS_HEADER,
    interaction_rows,
    items_rows,
    make_tenant,
    write_csv,
)

DAY = 86_400


@pytest.fixture
def shop(platform: Platform, tmp_path: Path) -> Scope:
    scope = make_tenant(platform, "shop", Region.EU)
    items = write_csv(tmp_path / "items.csv", ITEMS_HEADER, items_rows(10))
    run(platform, scope, items=items)
    return scope


def run(platform: Platform, scope: Scope, **files: Path) -> Any:
    return ingest(
        platform.plane(scope.region), scope, secret=platform.secret, actor="test", **files
    )


def offline(platform: Platform, scope: Scope) -> TenantOffline:
    return platform.plane(scope.region).offline.scoped(scope, actor="t")


def batches(platform: Platform, scope: Scope) -> int:
    """Interaction files recorded as ingested."""
    query = select(func.count()).select_from(IngestBatch).where(IngestBatch.kind == "interactions")
    with platform.plane(scope.region).session(scope, actor="t", action="read") as s:
        return int(s.execute(query).scalar_one())


def spread_rows(n: int, *, days: int = 5, seed: int = 0) -> list[tuple[Any, ...]]:
    """Rows over `days` days (one partition each)."""
    rows = interaction_rows(n, n_items=10, seed=seed)
    return [
        (u, i, 1_700_000_000 + (k % days) * DAY + k, e, w) for k, (u, i, _, e, w) in enumerate(rows)
    ]


def natural_keys(platform: Platform, scope: Scope) -> list[tuple[Any, ...]]:
    table = offline(platform, scope).read_table(["user_key", "item_id", "ts", "event"])
    return sorted(zip(*(table[c].to_pylist() for c in table.column_names), strict=True))


def test_rows_land_in_date_partitions_without_a_sequence_number(
    platform: Platform, shop: Scope, tmp_path: Path
) -> None:
    inter = write_csv(tmp_path / "e.csv", INTERACTIONS_HEADER, spread_rows(50, days=5))
    report = run(platform, shop, interactions=inter)
    store = offline(platform, shop)
    assert report.interactions.written == 50 and store.count() == 50
    assert len(store.partitions()) == 5
    assert all(f.name.startswith(INGEST) for f in store.files())
    assert set(store.read_table(["seq"])["seq"].to_pylist()) == {-1}
    assert store.stats().ingested == 50 and batches(platform, shop) == 1


def test_repeated_rows_within_a_file_are_stored_once(
    platform: Platform, shop: Scope, tmp_path: Path
) -> None:
    rows = spread_rows(40)
    inter = write_csv(tmp_path / "e.csv", INTERACTIONS_HEADER, rows + rows[:15])
    report = run(platform, shop, interactions=inter)
    assert (report.interactions.rows, report.interactions.written) == (55, 40)
    assert len(natural_keys(platform, shop)) == len(set(natural_keys(platform, shop))) == 40


def test_overlapping_files_across_partitions_store_each_row_once(
    platform: Platform, shop: Scope, tmp_path: Path
) -> None:
    rows = spread_rows(90, days=3)
    run(platform, shop, interactions=write_csv(tmp_path / "a.csv", INTERACTIONS_HEADER, rows[:60]))
    second = run(
        platform, shop, interactions=write_csv(tmp_path / "b.csv", INTERACTIONS_HEADER, rows[30:])
    )
    assert second.interactions.written == 30
    keys = natural_keys(platform, shop)
    assert len(keys) == len(set(keys)) == 90


def test_event_ids_are_the_natural_key(platform: Platform) -> None:
    users, items, events = (
        pa.array(v) for v in (["a", "a", "a", "b", "a"], ["x", "x", "y", "x", "x"], ["view"] * 5)
    )
    ids = event_ids(users, items, np.array([1, 1, 1, 1, 2]), events).to_pylist()
    assert ids[0] == ids[1] and len(set(ids[1:])) == 4 and all(len(i) == 32 for i in ids)
    other = event_ids(pa.array(["a"]), pa.array(["x"]), np.array([1]), pa.array(["click"]))
    assert other.to_pylist()[0] != ids[0]


def test_a_file_refused_before_publishing_leaves_nothing(
    platform: Platform, shop: Scope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: Any) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(offline_ingest.IngestStage, "publish", crash)
    monkeypatch.setattr(offline_ingest.IngestStage, "discard", lambda self: None)  # a hard crash
    inter = write_csv(tmp_path / "e.csv", INTERACTIONS_HEADER, spread_rows(30))
    with pytest.raises(RuntimeError):
        run(platform, shop, interactions=inter)
    store = offline(platform, shop)
    assert store.count() == 0 and batches(platform, shop) == 0
    assert list(store.folder.glob(".tmp-ingest-*"))  # what the crash left behind
    store.sweep()
    assert not list(store.folder.glob(".tmp-ingest-*"))
    monkeypatch.undo()
    assert run(platform, shop, interactions=inter).interactions.written == 30


@pytest.mark.parametrize("renames_before_crash", [0, 1, 3])
def test_a_crash_mid_publish_is_rolled_forward_without_loss_or_duplicates(
    platform: Platform,
    shop: Scope,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    renames_before_crash: int,
) -> None:
    inter = write_csv(tmp_path / "e.csv", INTERACTIONS_HEADER, spread_rows(60, days=5))
    real, calls = os.replace, []

    def flaky(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) > 1 + renames_before_crash:  # the journal's rename, then N files
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="disk gone"):
        run(platform, shop, interactions=inter)
    monkeypatch.undo()
    store = offline(platform, shop)
    assert journals(store.folder)  # the point of no return was passed
    assert store.count() == 0 and batches(platform, shop) == 0  # nothing visible yet
    store.sweep()  # rolls the journal forward
    assert not journals(store.folder)
    assert store.count() == 60 and len(store.partitions()) == 5
    again = run(platform, shop, interactions=inter)  # the batch row was never committed
    assert not again.interactions.already_ingested and again.interactions.written == 60
    keys = natural_keys(platform, shop)
    assert len(keys) == len(set(keys)) == 60 and batches(platform, shop) == 1
    assert run(platform, shop, interactions=inter).interactions.already_ingested


def test_the_next_ingest_rolls_a_pending_journal_forward(
    platform: Platform, shop: Scope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inter = write_csv(tmp_path / "e.csv", INTERACTIONS_HEADER, spread_rows(20, days=2))
    monkeypatch.setattr(offline_ingest.IngestStage, "complete", lambda self: None)  # crash
    run(platform, shop, interactions=inter)
    monkeypatch.undo()
    store = offline(platform, shop)
    assert store.count() == 0 and batches(platform, shop) == 1
    other = write_csv(tmp_path / "f.csv", INTERACTIONS_HEADER, spread_rows(20, days=2, seed=9))
    run(platform, shop, interactions=other)
    assert not journals(store.folder) and len(natural_keys(platform, shop)) == len(
        set(natural_keys(platform, shop))
    )
    assert store.count() == 20 + 20 - len(
        {(r[0], r[1], r[2]) for r in spread_rows(20, days=2)}
        & {(r[0], r[1], r[2]) for r in spread_rows(20, days=2, seed=9)}
    )


LINES = {
    "quoted newline": ('user_id,item_id,timestamp,event\nu1,i1,1,"a\nb"\nu1,i1,x,v\n', 4),
    "empty lines": ("user_id,item_id,timestamp\n\nu1,i1,1700000000\n\n\nu1,i1,x\n", 6),
    "crlf": ("user_id,item_id,timestamp\r\nu1,i1,1700000000\r\nu1,i1,x\r\n", 3),
}


@pytest.mark.parametrize("case", sorted(LINES))
def test_line_numbers_count_physical_lines(
    platform: Platform, shop: Scope, tmp_path: Path, case: str
) -> None:
    content, line = LINES[case]
    inter = tmp_path / "e.csv"
    inter.write_bytes(content.encode())
    with pytest.raises(IngestError) as caught:
        run(platform, shop, interactions=inter)
    assert (caught.value.line, caught.value.field) == (line, "timestamp")


def test_the_first_bad_row_wins_across_checks_and_blocks(
    platform: Platform, shop: Scope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atlasrec.ingest import interactions

    monkeypatch.setattr(interactions, "BLOCK_BYTES", 200)
    good = "".join(f"u{k},i1,{1_700_000_000 + k}\n" for k in range(40))
    content = "user_id,item_id,timestamp\n" + good + "u1,nope,1700000000\nu1,i1,bad\n,i1,1\n"
    inter = tmp_path / "e.csv"
    inter.write_text(content)
    with pytest.raises(IngestError) as caught:
        run(platform, shop, interactions=inter)
    assert (caught.value.line, caught.value.field) == (42, "item_id")


def test_conversions(platform: Platform, shop: Scope, tmp_path: Path) -> None:
    inter = tmp_path / "e.csv"
    inter.write_text(
        "user_id,item_id,timestamp,event,weight\n"
        " u1 , i1 ,2024-03-01T12:00:00Z, view ,2.5\n"
        "u1,i2,2024-03-01 13:00:00+01:00,,\n"
        "u1,i3,2024-03-01,click, 1e1\n"
        "u1,i4,1.7e9,click,-3\n"
    )
    run(platform, shop, interactions=inter)
    table = offline(platform, shop).read_table(["item_id", "ts", "event", "weight"])
    got = {r["item_id"]: (r["ts"], r["event"], r["weight"]) for r in table.to_pylist()}
    assert got == {
        "i1": (1709294400, "view", 2.5),
        "i2": (1709294400, "interaction", 1.0),
        "i3": (1709251200, "click", 10.0),
        "i4": (1_700_000_000, "click", -3.0),
    }


BAD = {
    "month 13": ("u1,i1,2024-13-01", "timestamp", "neither"),
    "year 2100": ("u1,i1,2100-01-01T00:00:00", "timestamp", "outside"),
    "inf timestamp": ("u1,i1,inf", "timestamp", "outside"),
    "empty timestamp": ("u1,i1,", "timestamp", "is empty"),
    "control char": ('"u\x02",i1,1', "user_id", "control, bidirectional"),
    "bidi override": ("u\u202e1,i1,1", "user_id", "control, bidirectional"),
    "byte-order mark": ("u1,\ufeffi1,1", "item_id", "byte-order"),
    "nul": ("u1,i\x001,1", "item_id", "NUL"),
    "long user": ("u" * 300 + ",i1,1", "user_id", "longer than 256"),
    "empty item": ("u1,  ,1", "item_id", "is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values(platform: Platform, shop: Scope, tmp_path: Path, case: str) -> None:
    row, field, reason = BAD[case]
    inter = tmp_path / "e.csv"
    inter.write_text(f"user_id,item_id,timestamp\nu1,i1,1700000000\n{row}\n")
    with pytest.raises(IngestError) as caught:
        run(platform, shop, interactions=inter)
    assert (caught.value.line, caught.value.field) == (3, field) and reason in str(caught.value)
    assert offline(platform, shop).count() == 0


def test_non_utf8_interactions_name_the_line(
    platform: Platform, shop: Scope, tmp_path: Path
) -> None:
    inter = tmp_path / "e.csv"
    inter.write_bytes(b"user_id,item_id,timestamp\nu1,i1,1700000000\nu\xe9,i1,1700000000\n")
    with pytest.raises(IngestError, match="not valid UTF-8") as caught:
        run(platform, shop, interactions=inter)
    assert caught.value.line == 3


def test_ingested_rows_and_logged_events_share_partitions(
    platform: Platform, shop: Scope, tmp_path: Path
) -> None:
    inter = write_csv(tmp_path / "e.csv", INTERACTIONS_HEADER, spread_rows(30, days=1))
    run(platform, shop, interactions=inter)
    store = offline(platform, shop)
    for seq in range(1, 11):  # ten log batches (files) in the same day, one redelivered
        event = LogEvent(f"ev-{seq}", "k1", "i1", 1_700_000_000 + seq, "view", 1.0)
        assert store.write([seq], [event]) == 1
        assert store.write([seq], [event]) == 0
    assert store.count() == 40
    done = store.compact(min_files=2)
    assert done.files_in == 10 and done.rows_out == 10
    assert store.count() == 40 and len(store.ingested_files()) == 1
    seqs = store.read_table(["seq"])["seq"]
    assert pc.sum(pc.equal(seqs, -1)).as_py() == 30


def test_the_training_snapshot_covers_ingested_parquet_files(
    platform: Platform, shop: Scope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = platform.plane(Region.EU)
    first = write_csv(tmp_path / "a.csv", INTERACTIONS_HEADER, spread_rows(20, days=2))
    run(platform, shop, interactions=first)
    before = load_tenant_dataset(plane, shop, actor="t")
    real, calls = os.replace, []

    def flaky(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) > 1:  # after the journal: the batch row is never committed
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    second = write_csv(tmp_path / "b.csv", INTERACTIONS_HEADER, spread_rows(20, days=2, seed=5))
    with pytest.raises(OSError):
        run(platform, shop, interactions=second)
    monkeypatch.undo()
    assert load_tenant_dataset(plane, shop, actor="t").snapshot == before.snapshot
    offline(platform, shop).sweep()  # only Parquet files change, no ingest batch row
    after = load_tenant_dataset(plane, shop, actor="t")
    assert after.snapshot != before.snapshot and after.n_interactions > before.n_interactions


def test_event_stats_count_ingested_rows_in_the_offline_store(
    platform: Platform, shop: Scope, tmp_path: Path
) -> None:
    from atlasrec.pipelines.events import event_stats

    run(
        platform,
        shop,
        interactions=write_csv(tmp_path / "e.csv", INTERACTIONS_HEADER, spread_rows(12)),
    )
    stats = event_stats(platform, "shop", actor="t")
    assert stats["stored"] == stats["offline"]["rows"] == stats["offline"]["ingested"] == 12
    assert stats["log"]["events"] == 0
