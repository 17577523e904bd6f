"""The embedded event log: durable appends, duplicates by event id, shared durable consumers."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlasrec.boundary import REFUSED
from atlasrec.errors import ConfigError, CrossRegionError, UnknownTenantError
from atlasrec.eventlog.local import FILE_NAME, LocalEventLog
from atlasrec.eventlog.records import LogEvent
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope, SharingPolicy

US = Scope("shop", Region.US)


def events(n: int, prefix: str = "e", start: int = 0) -> list[LogEvent]:
    return [
        LogEvent(f"{prefix}{k}", f"user{k % 3}", f"i{k % 5}", 1_700_000_000 + k, "view", 1.0)
        for k in range(start, start + n)
    ]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(Settings(home=tmp_path_factory.mktemp("eventlog")))
    platform.create_tenant("shop", region=Region.US, sharing=SharingPolicy.REGIONAL, actor="t")
    platform.create_tenant("other", region=Region.US, sharing=SharingPolicy.SOLO, actor="t")
    platform.create_tenant("eushop", region=Region.EU, sharing=SharingPolicy.SOLO, actor="t")
    yield platform
    platform.close()


@pytest.fixture
def log(platform: Platform, tmp_path: Path) -> Iterator[LocalEventLog]:
    log = LocalEventLog(Region.US, platform.plane(Region.US).boundary, tmp_path, ack_wait_s=0.5)
    yield log
    log.close()


def test_appends_get_increasing_seqs_and_a_repeated_event_id_is_a_duplicate(
    log: LocalEventLog,
) -> None:
    first = log.append(US, events(3), actor="test")
    assert first.seqs == [1, 2, 3] and first.accepted == 3 and first.duplicates == 0
    again = log.append(
        US, [*events(1, start=1), *events(1, start=3), *events(1, start=3)], actor="t"
    )
    assert again.seqs == [2, 4, 4] and again.duplicate == [True, False, True]
    other = log.append(Scope("other", Region.US), events(1), actor="test")  # ids are per tenant
    assert other.duplicate == [False] and log.count(US) == 4 and log.last_seq() == 5


def test_a_scope_of_another_region_or_an_unknown_tenant_writes_nothing_and_is_audited(
    log: LocalEventLog, platform: Platform
) -> None:
    ledger = platform.plane(Region.US).ledger
    before = len(ledger.records(action=REFUSED))
    with pytest.raises(CrossRegionError):
        log.append(Scope("eushop", Region.EU), events(2), actor="test")
    with pytest.raises(CrossRegionError):
        log.append(Scope("eushop", Region.US), events(2), actor="test")
    with pytest.raises(UnknownTenantError):
        log.append(Scope("ghost", Region.US), events(2), actor="test")
    assert log.last_seq() == 0
    refusals = [json.loads(r.details) for r in ledger.records(action=REFUSED)][before:]
    assert [(r["scope_tenant"], r["attempted"]) for r in refusals] == [
        ("eushop", "eventlog.append"),
        ("eushop", "eventlog.append"),
        ("ghost", "eventlog.append"),
    ]
    with pytest.raises(ConfigError):
        LocalEventLog(Region.EU, platform.plane(Region.US).boundary, Path("/nonexistent"))


def test_a_consumer_gets_each_event_until_acked_and_lag_counts_what_is_left(
    log: LocalEventLog,
) -> None:
    log.append(US, events(5), actor="test")
    consumer = log.consumer("offline")
    assert consumer.lag().pending == 5
    batch = consumer.fetch(3, timeout_s=0.1)
    assert [d.seq for d in batch] == [1, 2, 3] and batch[0].tenant_id == "shop"
    assert batch[0].event == events(1)[0] and not batch[0].redelivered
    assert (consumer.lag().pending, consumer.lag().unacknowledged) == (2, 3)
    consumer.ack(batch[:2])
    consumer.nak(batch[2:])
    again = consumer.fetch(10, timeout_s=0.1)
    assert [(d.seq, d.redelivered) for d in again] == [(3, True), (4, False), (5, False)]
    time.sleep(0.6)  # past ack_wait: unacked deliveries come back
    assert [d.seq for d in consumer.fetch(10, timeout_s=0.1)] == [3, 4, 5]
    assert log.consumer("online").lag().pending == 5  # each durable consumer has its own place
    assert consumer.fetch(10, timeout_s=0.05) == []  # all three are leased again


def test_an_empty_fetch_waits_for_an_append_then_returns(log: LocalEventLog) -> None:
    consumer = log.consumer("c")
    started = time.monotonic()
    assert consumer.fetch(5, timeout_s=0.2) == []
    assert time.monotonic() - started >= 0.19
    log.append(US, events(1), actor="test")
    assert [d.seq for d in consumer.fetch(5, timeout_s=1.0)] == [1]


def test_replay_delivers_again_from_a_sequence_number(log: LocalEventLog) -> None:
    log.append(US, events(4), actor="test")
    consumer = log.consumer("online")
    consumer.ack(consumer.fetch(10, timeout_s=0.1))
    assert consumer.lag().total == 0
    log.replay("online", 3)
    assert [d.seq for d in consumer.fetch(10, timeout_s=0.1)] == [3, 4]
    assert log.consumers() == ["online"]


def _consume_all(folder: str, name: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    settings = Settings(home=Path(folder) / "home")
    platform = Platform(settings)
    log = LocalEventLog(Region.US, platform.plane(Region.US).boundary, Path(folder), ack_wait_s=30)
    consumer = log.consumer(name)
    seen: list[int] = []
    while batch := consumer.fetch(7, timeout_s=0.3):
        seen += [d.seq for d in batch]
        consumer.ack(batch)
    out.put(seen)


def test_two_processes_sharing_a_consumer_split_the_events_without_overlap(
    tmp_path: Path,
) -> None:
    platform = Platform(Settings(home=tmp_path / "home"))
    platform.create_tenant("shop", region=Region.US, sharing=SharingPolicy.SOLO, actor="t")
    log = LocalEventLog(Region.US, platform.plane(Region.US).boundary, tmp_path)
    log.append(US, events(300), actor="test")
    log.consumer("shared")
    platform.close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_consume_all, args=(str(tmp_path), "shared", out)) for _ in "ab"]
    for w in workers:
        w.start()
    seen = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    assert sorted(seen[0] + seen[1]) == list(range(1, 301))
    assert log.consumer("shared").lag().total == 0


def _append_forever(folder: str, acked: str) -> None:
    settings = Settings(home=Path(folder) / "home")
    platform = Platform(settings)
    log = LocalEventLog(Region.US, platform.plane(Region.US).boundary, Path(folder))
    with open(acked, "a", buffering=1) as out:
        for n in range(100_000):
            result = log.append(US, events(10, prefix=f"b{n}-"), actor="test")
            out.write(" ".join(map(str, result.seqs)) + "\n")


def test_every_acknowledged_append_survives_kill_9(tmp_path: Path) -> None:
    platform = Platform(Settings(home=tmp_path / "home"))
    platform.create_tenant("shop", region=Region.US, sharing=SharingPolicy.SOLO, actor="t")
    platform.close()
    acked = tmp_path / "acked.txt"
    ctx = multiprocessing.get_context("spawn")
    writer = ctx.Process(target=_append_forever, args=(str(tmp_path), str(acked)))
    writer.start()
    deadline = time.monotonic() + 60
    while (not acked.exists() or acked.stat().st_size < 2_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    complete = acked.read_text().split("\n")[:-1]  # the last line may be cut short
    acknowledged = {int(s) for line in complete for s in line.split()}
    stored = {r[0] for r in sqlite3.connect(tmp_path / FILE_NAME).execute("SELECT seq FROM events")}
    assert len(acknowledged) >= 100 and acknowledged <= stored
