"""Both event logs (embedded SQLite and NATS JetStream), one contract: durable appends,
duplicates by event id, the region's boundary, shared durable consumers, kill -9, and the
served requests' records beside the events (each consumer reads one kind)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from atlasrec.boundary import REFUSED, Boundary
from atlasrec.errors import ConfigError, CrossRegionError, UnknownTenantError
from atlasrec.eventlog.base import ConsumerLag, EventLog, EventLogUnavailable
from atlasrec.eventlog.jetstream import JetStreamEventLog
from atlasrec.eventlog.local import FILE_NAME, LocalEventLog
from atlasrec.eventlog.records import SERVED, LogEvent, ServedRecord
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope, SharingPolicy

US = Scope("shop", Region.US)
NATS_URL = os.environ.get("ATLASREC_TEST_NATS_URL", "nats://127.0.0.1:4222")
ACK_WAIT_S = 1.0
KINDS = ["local", pytest.param("jetstream", marks=pytest.mark.nats)]


def open_log(kind: str, boundary: Boundary, folder: Path, root: str) -> EventLog:
    """The kind of log under test, on `folder` (local) or under the subject `root` (NATS)."""
    if kind == "local":
        return LocalEventLog(Region.US, boundary, folder, ack_wait_s=ACK_WAIT_S)
    return JetStreamEventLog(Region.US, boundary, NATS_URL, root=root, ack_wait_s=ACK_WAIT_S)


def close_log(log: EventLog) -> None:
    if isinstance(log, JetStreamEventLog):
        log.delete()
    log.close()


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


@pytest.fixture(params=KINDS)
def log(platform: Platform, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EventLog]:
    root = f"t{uuid.uuid4().hex[:10]}"
    log = open_log(request.param, platform.plane(Region.US).boundary, tmp_path, root)
    yield log
    close_log(log)


def test_appends_get_increasing_seqs_and_a_repeated_event_id_is_a_duplicate(log: EventLog) -> None:
    first = log.append(US, events(3), actor="test")
    assert first.seqs == [1, 2, 3] and first.accepted == 3 and first.duplicates == 0
    again = log.append(
        US, [*events(1, start=1), *events(1, start=3), *events(1, start=3)], actor="t"
    )
    assert again.seqs == [2, 4, 4] and again.duplicate == [True, False, True]
    other = log.append(Scope("other", Region.US), events(1), actor="test")  # ids are per tenant
    assert other.duplicate == [False] and log.count(US) == 4 and log.last_seq() == 5


def test_a_scope_of_another_region_or_an_unknown_tenant_writes_nothing_and_is_audited(
    log: EventLog, platform: Platform
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
    with pytest.raises(ConfigError):
        JetStreamEventLog(Region.EU, platform.plane(Region.US).boundary, NATS_URL)


def test_a_consumer_gets_each_event_until_acked_and_lag_counts_what_is_left(log: EventLog) -> None:
    log.append(US, events(5), actor="test")
    consumer = log.consumer("offline")
    assert consumer.lag().pending == 5
    batch = consumer.fetch(3, timeout_s=0.1)
    assert [d.seq for d in batch] == [1, 2, 3] and batch[0].tenant_id == "shop"
    assert batch[0].event == events(1)[0] and not batch[0].redelivered
    assert (consumer.lag().pending, consumer.lag().unacknowledged) == (2, 3)
    consumer.ack(batch[:2])
    consumer.nak(batch[2:])
    again = consumer.fetch(10, timeout_s=0.5)
    assert sorted((d.seq, d.redelivered) for d in again) == [(3, True), (4, False), (5, False)]
    time.sleep(ACK_WAIT_S + 0.2)  # past ack_wait: unacked deliveries come back
    assert sorted(d.seq for d in consumer.fetch(10, timeout_s=0.5)) == [3, 4, 5]
    assert log.consumer("online").lag().pending == 5  # each durable consumer has its own place
    assert consumer.fetch(10, timeout_s=0.05) == []  # all three are leased again


def test_an_empty_fetch_waits_for_an_append_then_returns(log: EventLog) -> None:
    consumer = log.consumer("c")
    started = time.monotonic()
    assert consumer.fetch(5, timeout_s=0.2) == []
    assert time.monotonic() - started >= 0.19
    log.append(US, events(1), actor="test")
    assert [d.seq for d in consumer.fetch(5, timeout_s=1.0)] == [1]


def test_an_append_during_a_waiting_fetch_is_handed_over_at_once(log: EventLog) -> None:
    consumer = log.consumer("c")
    assert consumer.fetch(5, timeout_s=0.05) == []
    appender = threading.Timer(0.2, lambda: log.append(US, events(1), actor="test"))
    started = time.monotonic()
    appender.start()
    got = consumer.fetch(100, timeout_s=3.0)  # a batch it will not fill
    waited = time.monotonic() - started
    appender.join()
    assert [d.seq for d in got] == [1]
    assert waited < 1.5  # answered by the event, not by the request's expiry
    consumer.close()


def test_replay_delivers_again_from_a_sequence_number(log: EventLog) -> None:
    log.append(US, events(4), actor="test")
    consumer = log.consumer("online")
    consumer.ack(consumer.fetch(10, timeout_s=0.1))
    assert consumer.lag().total == 0
    assert consumer.lag().ack_floor == 4
    consumer.close()
    log.replay("online", 3)
    assert [d.seq for d in log.consumer("online").fetch(10, timeout_s=0.5)] == [3, 4]
    assert log.consumers() == ["online"]


def test_a_tenants_events_are_read_from_a_sequence_number_outside_any_consumer(
    log: EventLog,
) -> None:
    log.append(US, events(3), actor="test")
    log.append(Scope("other", Region.US), events(2, prefix="o"), actor="test")
    log.append(US, events(2, start=3), actor="test")
    assert [d.seq for d in log.read(US, 2, 10)] == [2, 3, 6, 7]
    assert [d.event.event_id for d in log.read(US, 1, 2)] == ["e0", "e1"]
    assert [d.tenant_id for d in log.read(Scope("other", Region.US), 1, 10)] == ["other"] * 2
    assert log.read(US, 8, 10) == [] and log.consumers() == [] and log.lags() == {}


def test_reading_a_tenants_last_events_does_not_wait(log: EventLog) -> None:
    """A read past what the log holds (a tenant's warm-up ends with one) answers at once."""
    log.append(US, events(3), actor="test")
    started = time.perf_counter()
    assert [d.seq for d in log.read(US, 2, 100)] == [2, 3]
    assert log.read(US, 4, 100) == [] and log.read(Scope("other", Region.US), 1, 100) == []
    assert time.perf_counter() - started < 1.0


def test_lags_are_read_for_every_consumer_of_each_kind(log: EventLog) -> None:
    log.append(US, [*events(4), *served(2)], actor="test")
    online, requests = log.consumer("online"), log.consumer("requests", SERVED)
    online.ack(online.fetch(1, timeout_s=0.5))
    assert [d.seq for d in online.fetch(1, timeout_s=0.5)] == [2]
    online.close()
    requests.close()
    assert log.lags() == {"online": ConsumerLag(2, 1, 1), "requests": ConsumerLag(2, 0, 0)}


def _child_log(kind: str, folder: str, root: str) -> EventLog:
    platform = Platform(Settings(home=Path(folder) / "home"))
    return open_log(kind, platform.plane(Region.US).boundary, Path(folder), root)


def _consume_all(kind: str, folder: str, root: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    consumer = _child_log(kind, folder, root).consumer("shared")
    seen: list[int] = []
    while batch := consumer.fetch(7, timeout_s=0.5):
        seen += [d.seq for d in batch]
        consumer.ack(batch)
    out.put(seen)


def _append_forever(kind: str, folder: str, root: str, acked: str) -> None:
    log = _child_log(kind, folder, root)
    with open(acked, "a", buffering=1) as out:
        for n in range(100_000):
            result = log.append(US, events(10, prefix=f"b{n}-"), actor="test")
            out.write(" ".join(map(str, result.seqs)) + "\n")


@pytest.fixture(params=KINDS)
def shared(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, str, EventLog]]:
    """(kind, subject root, the parent's log) for a log that child processes open too."""
    platform = Platform(Settings(home=tmp_path / "home"))
    platform.create_tenant("shop", region=Region.US, sharing=SharingPolicy.SOLO, actor="t")
    root = f"t{uuid.uuid4().hex[:10]}"
    log = open_log(request.param, platform.plane(Region.US).boundary, tmp_path, root)
    yield request.param, root, log
    close_log(log)
    platform.close()


def test_two_processes_sharing_a_consumer_split_the_events_without_overlap(
    tmp_path: Path, shared: tuple[str, str, EventLog]
) -> None:
    kind, root, log = shared
    log.append(US, events(300), actor="test")
    log.consumer("shared").close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [
        ctx.Process(target=_consume_all, args=(kind, str(tmp_path), root, out)) for _ in "ab"
    ]
    for w in workers:
        w.start()
    seen = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    assert sorted(seen[0] + seen[1]) == list(range(1, 301))
    assert log.consumer("shared").lag().total == 0


def test_every_acknowledged_append_survives_kill_9(
    tmp_path: Path, shared: tuple[str, str, EventLog]
) -> None:
    kind, root, log = shared
    acked = tmp_path / "acked.txt"
    ctx = multiprocessing.get_context("spawn")
    writer = ctx.Process(target=_append_forever, args=(kind, str(tmp_path), root, str(acked)))
    writer.start()
    deadline = time.monotonic() + 60
    while (not acked.exists() or acked.stat().st_size < 2_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    complete = acked.read_text().split("\n")[:-1]  # the last line may be cut short
    acknowledged = {int(s) for line in complete for s in line.split()}
    consumer = log.consumer("audit")
    stored: set[int] = set()
    while batch := consumer.fetch(1_000, timeout_s=0.5):
        stored.update(d.seq for d in batch)
        consumer.ack(batch)
    assert len(acknowledged) >= 100 and acknowledged <= stored


@pytest.mark.nats
def test_an_unreachable_server_fails_fast_with_a_typed_error(platform: Platform) -> None:
    started = time.monotonic()
    with pytest.raises(EventLogUnavailable, match=r"nats://127\.0\.0\.1:1"):
        JetStreamEventLog(Region.US, platform.plane(Region.US).boundary, "nats://127.0.0.1:1")
    assert time.monotonic() - started < 5


def served(n: int, start: int = 0) -> list[ServedRecord]:
    return [
        ServedRecord(
            request_id=f"r{k:031d}",
            served_at=datetime(2026, 1, 1, 12, 0, k % 60, tzinfo=UTC),
            model_version="m1",
            user_key=None if k % 2 else f"user{k}",
            k=3,
            items=("i1", "i2", "i3"),
            cold_start=bool(k % 2),
            degraded=("ranking",) if k == 1 else (),
            timings_ms={"total": 1.5 + k},
            intent="next",
        )
        for k in range(start, start + n)
    ]


def test_served_records_and_events_share_the_sequence_but_each_consumer_reads_one_kind(
    log: EventLog,
) -> None:
    log.append(US, events(2), actor="test")
    appended = log.append(US, [*served(2), *served(1)], actor="test")  # a repeated request id
    assert appended.seqs == [3, 4, 3] and appended.duplicate == [False, False, True]
    # keys are per kind: an event whose id is a request's id is not a duplicate of its record
    twin = LogEvent(served(1)[0].request_id, "u", "i1", 1_700_000_000, "view", 1.0)
    assert log.append(US, [twin], actor="test").duplicate == [False]
    log.append(US, served(1, start=2), actor="test")
    assert log.last_seq() == 6 and log.count(US) == 3  # count and read: events only
    assert [d.seq for d in log.read(US, 1, 10)] == [1, 2, 5]
    online, requests = log.consumer("online"), log.consumer("requests", SERVED)
    assert (online.lag().pending, requests.lag().pending) == (3, 3)
    seen = online.fetch(10, timeout_s=0.5)
    assert [(d.seq, type(d.event)) for d in seen] == [(1, LogEvent), (2, LogEvent), (5, LogEvent)]
    logged = requests.fetch(10, timeout_s=0.5)
    assert [(d.seq, d.tenant_id) for d in logged] == [(3, "shop"), (4, "shop"), (6, "shop")]
    assert [d.event for d in logged] == served(3)  # the records round-trip whole
    assert (online.lag().unacknowledged, requests.lag().unacknowledged) == (3, 3)
    requests.ack(logged)
    assert requests.lag().total == 0 and online.lag().total == 3
    assert log.lags() == {"online": online.lag(), "requests": requests.lag()}
    assert online.fetch(10, timeout_s=0.1) == [] and requests.fetch(10, timeout_s=0.1) == []
    assert sorted(log.consumers()) == ["online", "requests"]
    with pytest.raises(ConfigError, match="requests"):
        log.consumer("requests")  # a consumer keeps its kind
    with pytest.raises(ConfigError, match="online"):
        log.consumer("online", SERVED)


def test_a_replayed_served_consumer_keeps_its_kind(log: EventLog) -> None:
    log.append(US, [*events(1), *served(2), *events(1, start=1)], actor="test")
    requests = log.consumer("requests", SERVED)
    requests.ack(requests.fetch(10, timeout_s=0.5))
    requests.close()
    log.replay("requests", 1)
    again = log.consumer("requests", SERVED).fetch(10, timeout_s=0.5)
    assert [(d.seq, d.event.request_id) for d in again] == [
        (2, served(1)[0].request_id),
        (3, served(2)[1].request_id),
    ]


def test_served_records_of_another_region_are_refused_and_audited(
    log: EventLog, platform: Platform
) -> None:
    ledger = platform.plane(Region.US).ledger
    before = len(ledger.records(action=REFUSED))
    with pytest.raises(CrossRegionError):
        log.append(Scope("eushop", Region.EU), served(2), actor="serving")
    with pytest.raises(UnknownTenantError):
        log.append(Scope("ghost", Region.US), served(1), actor="serving")
    assert log.last_seq() == 0
    refusals = [json.loads(r.details) for r in ledger.records(action=REFUSED)][before:]
    assert [(r["scope_tenant"], r["attempted"]) for r in refusals] == [
        ("eushop", "eventlog.append"),
        ("ghost", "eventlog.append"),
    ]


def test_an_events_only_file_is_upgraded_in_place(platform: Platform, tmp_path: Path) -> None:
    """A log file written before served records existed keeps its events, seqs and cursors."""
    db = sqlite3.connect(tmp_path / FILE_NAME)
    db.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, "
        "event_id TEXT NOT NULL, body BLOB NOT NULL, appended_at REAL NOT NULL, "
        "UNIQUE (tenant_id, event_id));"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE cursors (name TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('log_id', 'old');"
        "INSERT INTO cursors VALUES ('offline', 2);"
    )
    for n, event in enumerate(events(2), start=1):
        db.execute(
            "INSERT INTO events VALUES (?, 'shop', ?, ?, 0)", (n, event.event_id, event.encode())
        )
    db.commit()
    db.close()
    log = LocalEventLog(Region.US, platform.plane(Region.US).boundary, tmp_path)
    assert log.log_id == "old" and log.read(US, 1, 10)[1].event == events(2)[1]
    assert log.append(US, events(1, start=1), actor="t").duplicate == [True]
    assert log.append(US, served(1), actor="t").seqs == [3]
    assert [d.seq for d in log.consumer("offline").fetch(10, timeout_s=0.1)] == [2]
    assert [d.seq for d in log.consumer("requests", SERVED).fetch(10, timeout_s=0.1)] == [3]
    log.close()


@pytest.mark.nats
def test_a_stream_of_events_only_gets_the_other_kinds_subjects(platform: Platform) -> None:
    root = f"t{uuid.uuid4().hex[:10]}"
    boundary = platform.plane(Region.US).boundary
    first = JetStreamEventLog(Region.US, boundary, NATS_URL, root=root)
    config = first._run(first._js.stream_info(first.stream)).config
    config.subjects = [f"{root}.us.events.*"]  # as the stream was created before
    first._run(first._js.update_stream(config))
    first.close()
    log = JetStreamEventLog(Region.US, boundary, NATS_URL, root=root)
    try:
        assert log.append(US, served(1), actor="t").seqs == [1]
        subjects = log._run(log._js.stream_info(log.stream)).config.subjects
        assert sorted(subjects or []) == [
            f"{root}.us.{kind}.*" for kind in ("catalog", "events", "served")
        ]
    finally:
        close_log(log)


@pytest.mark.nats
def test_changed_replay_and_duplicate_windows_are_applied_to_the_existing_stream(
    platform: Platform,
) -> None:
    root = f"t{uuid.uuid4().hex[:10]}"
    boundary = platform.plane(Region.US).boundary
    first = JetStreamEventLog(Region.US, boundary, NATS_URL, root=root)
    first.append(US, events(1), actor="t")
    first.close()
    for window, age in ((30.0, 3_600.0), (30.0, 7_200.0), (60.0, 7_200.0)):
        log = JetStreamEventLog(
            Region.US, boundary, NATS_URL, root=root, duplicate_window_s=window, max_age_s=age
        )
        config = log._run(log._js.stream_info(log.stream)).config
        assert (config.duplicate_window, config.max_age) == (window, age)
        assert log.count(US) == 1  # updated in place: what it held stays
        log.close()
    close_log(JetStreamEventLog(Region.US, boundary, NATS_URL, root=root))
