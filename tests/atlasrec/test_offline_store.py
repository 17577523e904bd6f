"""The offline store: Parquet by tenant and date, each log sequence number stored once."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlasrec.boundary import REFUSED
from atlasrec.errors import CrossRegionError
from atlasrec.eventlog.records import LogEvent
from atlasrec.offline_store import TMP, OfflineStore, TenantOffline, live_files
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope, SharingPolicy

SHOP = Scope("shop", Region.US)
DAY = 86_400
T0 = 1_700_006_400  # 2023-11-15 00:00 UTC


def event(seq: int, *, day: int = 0, event_id: str | None = None) -> LogEvent:
    return LogEvent(
        event_id or f"e{seq}", f"u{seq % 7}", f"i{seq % 11}", T0 + day * DAY + seq, "view", 1.0
    )


def write(store: TenantOffline, seqs: list[int], day: int = 0) -> int:
    return store.write(seqs, [event(s, day=day) for s in seqs])


def stored_seqs(store: TenantOffline) -> list[int]:
    return sorted(store.read_table(["seq"])["seq"].to_pylist())


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(Settings(home=tmp_path_factory.mktemp("offline")))
    for tenant, region in (("shop", Region.US), ("other", Region.US), ("eushop", Region.EU)):
        platform.create_tenant(tenant, region=region, sharing=SharingPolicy.SOLO, actor="t")
    yield platform
    platform.close()


@pytest.fixture
def offline(platform: Platform, tmp_path: Path) -> OfflineStore:
    return OfflineStore(tmp_path, platform.plane(Region.US).boundary)


def test_events_are_stored_by_tenant_and_date_and_read_back(offline: OfflineStore) -> None:
    shop = offline.scoped(SHOP)
    assert write(shop, [1, 2, 3]) == 3 and write(shop, [4, 5], day=1) == 2
    write(offline.scoped(Scope("other", Region.US)), [6])
    assert [p.name for p in shop.partitions()] == ["date=2023-11-15", "date=2023-11-16"]
    assert all(f.parent.parent.name == "tenant=shop" for f in shop.files())
    table = shop.read_table(["seq", "user_key", "item_id", "ts", "weight"])
    rows = sorted(
        zip(*(table[c].to_pylist() for c in ("seq", "user_key", "item_id", "ts")), strict=True)
    )
    assert rows == [
        (s, f"u{s % 7}", f"i{s % 11}", event(s, day=int(s > 3)).ts) for s in range(1, 6)
    ]
    assert shop.count() == 5 and shop.stats().partitions == 2


def test_a_redelivered_sequence_number_is_stored_once_however_it_is_batched(
    offline: OfflineStore,
) -> None:
    shop = offline.scoped(SHOP)
    assert write(shop, [1, 2, 3, 4]) == 4
    assert write(shop, [3, 4, 5]) == 1
    assert write(shop, [5, 5, 6, 1]) == 1
    assert stored_seqs(shop) == [1, 2, 3, 4, 5, 6]


def _write_range(root: str, seqs: list[int], go: Any) -> None:
    platform = Platform(Settings(home=Path(root) / "home"))
    store = OfflineStore(Path(root), platform.plane(Region.US).boundary).scoped(SHOP)
    go.wait()  # both writers start together, on the same batches
    for start in range(0, len(seqs), 10):
        write(store, seqs[start : start + 10])


def test_two_writer_processes_never_store_a_sequence_number_twice(tmp_path: Path) -> None:
    platform = Platform(Settings(home=tmp_path / "home"))
    platform.create_tenant("shop", region=Region.US, sharing=SharingPolicy.SOLO, actor="t")
    platform.close()
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Barrier(2)
    overlapping = [list(range(1, 451)), list(range(1, 451))]
    writers = [ctx.Process(target=_write_range, args=(str(tmp_path), s, go)) for s in overlapping]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
    assert all(w.exitcode == 0 for w in writers)
    platform = Platform(Settings(home=tmp_path / "home"))
    store = OfflineStore(tmp_path, platform.plane(Region.US).boundary).scoped(SHOP)
    assert stored_seqs(store) == list(range(1, 451))
    platform.close()


def test_a_file_not_yet_renamed_is_invisible_and_swept(offline: OfflineStore) -> None:
    shop = offline.scoped(SHOP)
    write(shop, [1, 2])
    (part,) = shop.partitions()
    shutil.copy(shop.files()[0], part / f"{TMP}crashed.parquet")  # a write cut short
    assert stored_seqs(shop) == [1, 2] and write(shop, [1, 2, 3]) == 1
    assert shop.sweep() == 1 and not list(part.glob(f"{TMP}*"))


def test_compaction_keeps_every_row_once_and_drops_repeated_event_ids(
    offline: OfflineStore,
) -> None:
    shop = offline.scoped(SHOP)
    for start in range(1, 40, 4):
        write(shop, list(range(start, start + 4)))
    shop.write([100], [event(100, event_id="e5")])  # an event id repeated past the log's window
    done = shop.compact(min_files=2)
    assert (done.files_in, done.rows_in, done.rows_out) == (11, 41, 40)
    assert len(shop.files()) == 1 and stored_seqs(shop) == list(range(1, 41))
    assert write(shop, [39, 40, 41]) == 1  # the compacted file still counts as holding them


def test_a_compaction_cut_short_before_deleting_its_inputs_reads_each_row_once(
    offline: OfflineStore, tmp_path: Path
) -> None:
    shop = offline.scoped(SHOP)
    for start in (1, 5, 9):
        write(shop, list(range(start, start + 4)))
    saved = tmp_path / "saved"
    saved.mkdir()
    inputs = shop.files()
    for f in inputs:
        shutil.copy(f, saved / f.name)
    shop.compact(min_files=2)
    (part,) = shop.partitions()
    for f in inputs:  # as if the process died after the rename, before the deletes
        shutil.copy(saved / f.name, part / f.name)
    assert stored_seqs(shop) == list(range(1, 13)) and shop.count() == 12
    (compacted,) = live_files(part)
    replaced = json.loads(pq.read_metadata(compacted).metadata[b"atlasrec.replaces"])
    assert sorted(replaced) == sorted(f.name for f in inputs)
    assert shop.sweep() == 3 and len(list(part.glob("*.parquet"))) == 1
    write(shop, list(range(13, 17)))
    shop.compact(min_files=2)  # a second compaction replaces the first
    assert stored_seqs(shop) == list(range(1, 17)) and len(shop.files()) == 1


def test_a_scope_of_another_region_is_refused_and_audited(
    offline: OfflineStore, platform: Platform
) -> None:
    ledger = platform.plane(Region.US).ledger
    before = len(ledger.records(action=REFUSED))
    with pytest.raises(CrossRegionError):
        offline.scoped(Scope("eushop", Region.EU))
    with pytest.raises(CrossRegionError):
        offline.scoped(Scope("eushop", Region.US))
    refusals = [json.loads(r.details) for r in ledger.records(action=REFUSED)][before:]
    assert [r["attempted"] for r in refusals] == ["offline_store.open", "offline_store.open"]


BATCHES = st.lists(
    st.one_of(
        st.tuples(
            st.just("write"), st.lists(st.integers(1, 60), min_size=1, max_size=12), st.just(0)
        ),
        st.tuples(st.just("compact"), st.just([]), st.integers(1, 3)),
    ),
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=BATCHES)
def test_any_writes_and_compactions_store_exactly_the_distinct_sequence_numbers(
    platform: Platform,
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[str, list[int], int]],
) -> None:
    store = OfflineStore(tmp_path_factory.mktemp("prop"), platform.plane(Region.US).boundary)
    shop = store.scoped(SHOP)
    expected: set[int] = set()
    for op, seqs, n in steps:
        if op == "write":  # a sequence number is always the same event (the same day)
            new = shop.write(seqs, [event(s, day=s % 3) for s in seqs])
            assert new == len(set(seqs) - expected)
            expected |= set(seqs)
        else:
            shop.compact(min_files=n)
    assert stored_seqs(shop) == sorted(expected)
