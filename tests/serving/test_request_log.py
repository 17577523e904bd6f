"""The serving request log: batches of served records appended to the region's log, held
back (bounded, counted) while the log is down, refused scopes dropped and audited."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from atlasrec.boundary import REFUSED
from atlasrec.eventlog.base import EventLogUnavailable
from atlasrec.eventlog.local import LocalEventLog
from atlasrec.eventlog.records import SERVED, Appended, Record, ServedRecord
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope, SharingPolicy
from serving.request_log import RequestLog

SHOP = Scope("shop", Region.EU)


class FlakyLog(LocalEventLog):
    """The embedded log, with an outage switch and a count of appends."""

    down = False
    appends = 0

    def append(self, scope: Scope, events: Sequence[Record], *, actor: str) -> Appended:
        self.appends += 1
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


def test_records_are_appended_in_batches_and_close_appends_the_rest(log: FlakyLog) -> None:
    request_log = RequestLog(log, flush_s=2.0)
    for n in range(50):
        request_log.served(SHOP, record(n))
        time.sleep(0.002)
    assert request_log.flush()  # ends the batch's window
    assert log.appends == 1  # one batch
    request_log.served(SHOP, record(50))
    request_log.served(SHOP, record(0))  # a repeat of a request id is stored once
    request_log.close()
    assert in_log(log) == sorted(record(n).request_id for n in range(51))
    assert (request_log.stats.logged, request_log.stats.failures) == (52, 0)


def test_records_are_held_back_while_the_log_is_down_then_appended(log: FlakyLog) -> None:
    request_log = RequestLog(log, flush_s=0.01, retry_s=0.05)
    log.down = True
    for n in range(5):
        request_log.served(SHOP, record(n))
    assert not request_log.flush()  # tried, and held back
    stats = request_log.stats
    assert stats.failures >= 1 and stats.held == 5 and stats.logged == 0
    log.down = False
    assert request_log.flush()
    assert (stats.held, stats.logged, stats.dropped) == (0, 5, 0)
    assert in_log(log) == [record(n).request_id for n in range(5)]
    request_log.close()


def test_a_long_outage_holds_at_most_max_held_records_and_counts_the_dropped(
    log: FlakyLog,
) -> None:
    request_log = RequestLog(log, flush_s=0.01, retry_s=0.05, max_held=3)
    log.down = True
    for n in range(5):
        request_log.served(SHOP, record(n))
    assert not request_log.flush()
    assert (request_log.stats.held, request_log.stats.dropped) == (3, 2)
    log.down = False
    request_log.close()
    assert in_log(log) == [record(n).request_id for n in (2, 3, 4)]  # the oldest dropped


def test_a_scope_of_another_region_is_refused_audited_and_dropped(
    log: FlakyLog, platform: Platform
) -> None:
    request_log = RequestLog(log, flush_s=0.01)
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
