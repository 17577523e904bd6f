"""The serving request log: records kept before their answer (group commits to the region's
log, a durable spool while it is down, replayed by a successor), refused scopes audited."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from atlasrec.boundary import REFUSED
from atlasrec.eventlog.base import EventLogUnavailable
from atlasrec.eventlog.local import LocalEventLog
from atlasrec.eventlog.records import SERVED, Appended, Record, ServedRecord
from atlasrec.eventlog.spool import RecordSpool
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope, SharingPolicy
from serving.request_log import RequestLog

SHOP = Scope("shop", Region.EU)


class FlakyLog(LocalEventLog):
    """The embedded log, with an outage switch and a count of appends."""

    down = False
    stall_s = 0.0
    appends = 0

    def append(
        self, scope: Scope, events: Sequence[Record], *, actor: str, timeout_s: float | None = None
    ) -> Appended:
        self.appends += 1
        if self.stall_s and timeout_s is not None and self.stall_s > timeout_s:
            time.sleep(timeout_s)  # a remote log not confirming in time (it may store later)
            raise EventLogUnavailable("event log of region 'eu': no confirmation in time")
        time.sleep(self.stall_s)
        if self.down:
            raise EventLogUnavailable("event log of region 'eu' unavailable: test outage")
        return super().append(scope, events, actor=actor)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(Settings(home=tmp_path / "home"))
    platform.create_tenant("shop", region=Region.EU, sharing=SharingPolicy.SOLO, actor="t")
    platform.create_tenant("far", region=Region.US, sharing=SharingPolicy.SOLO, actor="t")
    yield platform
    platform.close()


@pytest.fixture
def log(platform: Platform, tmp_path: Path) -> Iterator[FlakyLog]:
    log = FlakyLog(Region.EU, platform.plane(Region.EU).boundary, tmp_path / "log")
    yield log
    log.close()


def record(n: int) -> ServedRecord:
    return ServedRecord(
        f"{n:032x}", datetime.now(UTC), "m1", None, 1, ("i1",), True, (), {"total": 1.0}, "next"
    )


def in_log(log: FlakyLog) -> list[str]:
    consumer = log.consumer("requests", SERVED)
    deliveries = consumer.fetch(100_000, timeout_s=0.1)
    consumer.nak(deliveries)
    return sorted(d.event.request_id for d in deliveries)


def kept(request_log: RequestLog, n: int) -> list[bool]:
    """Queue records 0..n-1; whether each was kept (as the route waits for it)."""
    answers: list[bool] = []
    done = threading.Event()

    def settle(ok: bool) -> None:
        answers.append(ok)
        if len(answers) == n:
            done.set()

    for i in range(n):
        request_log.served(SHOP, record(i), settle)
    assert done.wait(10)
    return answers


def test_records_are_kept_before_they_are_answered_in_group_commits(
    log: FlakyLog, tmp_path: Path
) -> None:
    request_log = RequestLog(log, tmp_path / "spool")
    assert kept(request_log, 500) == [True] * 500
    assert in_log(log) == sorted(record(n).request_id for n in range(500))  # before any flush
    assert 1 <= log.appends < 500  # what queued during an append went in the next
    request_log.served(SHOP, record(0))  # a repeat of a request id is stored once
    request_log.close()
    assert len(in_log(log)) == 500
    assert (request_log.stats.logged, request_log.stats.failures) == (501, 0)


def test_records_are_spooled_while_the_log_is_down_then_appended(
    log: FlakyLog, tmp_path: Path
) -> None:
    request_log = RequestLog(log, tmp_path / "spool", retry_s=0.05)
    log.down = True
    assert kept(request_log, 5) == [True] * 5  # on disk, in the spool
    assert not request_log.flush()  # tried, and still held
    stats = request_log.stats
    assert stats.failures >= 1 and (stats.held, stats.spooled, stats.logged) == (5, 5, 0)
    assert in_log(log) == []
    log.down = False
    assert request_log.flush()
    assert (stats.held, stats.logged, stats.dropped) == (0, 5, 0)
    assert in_log(log) == [record(n).request_id for n in range(5)]
    request_log.close()
    assert list((tmp_path / "spool").iterdir()) == []  # an empty spool is removed


def test_a_log_not_confirming_in_time_does_not_hold_answers(log: FlakyLog, tmp_path: Path) -> None:
    request_log = RequestLog(log, tmp_path / "spool", append_wait_s=0.2, retry_s=0.1)
    log.stall_s = 1.0  # the log does not confirm within the request log's wait
    started = time.monotonic()
    assert kept(request_log, 3) == [True] * 3
    assert time.monotonic() - started < 0.8  # spooled after 0.2 s, not held for the append
    assert request_log.stats.spooled == 3
    log.stall_s = 0.0
    assert request_log.flush()
    assert in_log(log) == [record(n).request_id for n in range(3)]
    request_log.close()


def test_a_killed_processs_spool_is_replayed_by_the_next(log: FlakyLog, tmp_path: Path) -> None:
    dead = RecordSpool.create(tmp_path / "spool", SERVED, Region.EU)
    dead.put(SHOP, [record(n) for n in range(3)])
    os.close(dead._lock)  # what kill -9 leaves: the files, and no process holding them
    dead._db.close()
    successor = RequestLog(log, tmp_path / "spool", retry_s=0.05)
    assert successor.flush()
    assert in_log(log) == [record(n).request_id for n in range(3)]
    successor.close()
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_record_neither_logged_nor_spooled_is_not_kept(
    log: FlakyLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_log = RequestLog(log, tmp_path / "spool")
    log.down = True

    def disk_full(scope: Scope, records: Sequence[Record]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(request_log.spool, "put", disk_full)
    assert kept(request_log, 2) == [False, False]
    assert request_log.stats.dropped == 2
    request_log.close()


def test_a_scope_of_another_region_is_refused_audited_and_dropped(
    log: FlakyLog, platform: Platform, tmp_path: Path
) -> None:
    request_log = RequestLog(log, tmp_path / "spool")
    request_log.served(Scope("far", Region.US), record(1))
    request_log.served(Scope("far", Region.EU), record(2))
    request_log.served(SHOP, record(3))
    assert request_log.flush()
    assert request_log.stats.dropped == 2 and request_log.stats.logged == 1
    assert in_log(log) == [record(3).request_id]
    refusals = [
        json.loads(r.details) for r in platform.plane(Region.EU).ledger.records(action=REFUSED)
    ]
    assert [(r["scope_tenant"], r["attempted"]) for r in refusals] == [
        ("far", "eventlog.append"),
        ("far", "eventlog.append"),
    ]
    request_log.close()
