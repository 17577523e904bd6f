"""The `requests` consumer: served requests' records from the region's log (embedded and
JetStream) to the region DB (SQLite and PostgreSQL), once each, with a ledger record per
stored batch, across a crash before the ack and a failed write."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from atlasrec.consumers import Subscription
from atlasrec.dataplane.tables import ServedRequest
from atlasrec.eventlog.jetstream import JetStreamEventLog
from atlasrec.eventlog.records import SERVED, Delivery, LogEvent, ServedRecord
from atlasrec.pipelines.events import consume, event_stats
from atlasrec.platform import Platform
from atlasrec.served_requests import ACTION, batch_details, requests_sink
from atlasrec.tenancy import Region, Scope, SharingPolicy

SHOP = Scope("shop", Region.EU)
NATS_URL = os.environ.get("ATLASREC_TEST_NATS_URL", "nats://127.0.0.1:4222")
ACK_WAIT_S = 1.0


@pytest.fixture(params=["local", pytest.param("jetstream", marks=pytest.mark.nats)])
def platform(make_settings, request: pytest.FixtureRequest) -> Iterator[Platform]:  # type: ignore[no-untyped-def]
    """A platform whose EU log is embedded or JetStream (under subjects of its own)."""
    overrides: dict[str, object] = {"event_ack_wait_s": ACK_WAIT_S}
    if request.param == "jetstream":
        overrides |= {"event_log_url": NATS_URL, "event_log_root": f"t{uuid.uuid4().hex[:10]}"}
    platform = Platform(make_settings(**overrides))
    platform.create_tenant("shop", region=Region.EU, sharing=SharingPolicy.SOLO, actor="t")
    yield platform
    log = platform.plane(Region.EU).events
    if isinstance(log, JetStreamEventLog):
        log.delete()
    platform.close()


def records(n: int, start: int = 0) -> list[ServedRecord]:
    return [
        ServedRecord(
            request_id=f"{k:032x}",
            served_at=datetime(2026, 1, 1, 12, 0, k % 60, tzinfo=UTC),
            model_version="m1",
            user_key=f"user{k}",
            k=2,
            items=(f"i{k}", f"i{k + 1}"),
            cold_start=False,
            degraded=(),
            timings_ms={"total": 2.0},
            intent="profile" if k % 2 else "next",
        )
        for k in range(start, start + n)
    ]


def stored(platform: Platform) -> list[tuple[str, list[str], str]]:
    with platform.plane(Region.EU).session(SHOP, actor="t", action="t") as session:
        rows = session.exec(select(ServedRequest).order_by(ServedRequest.request_id)).all()
        return [(r.request_id, r.items, r.intent) for r in rows]


def ledger_batches(platform: Platform) -> list[dict[str, object]]:
    ledger = platform.plane(Region.EU).ledger
    return [json.loads(r.details) for r in ledger.records(tenant_id="shop", action=ACTION)]


def expected(recs: Sequence[ServedRecord]) -> list[tuple[str, list[str], str]]:
    return [(r.request_id, list(r.items), r.intent) for r in recs]


def test_records_are_stored_once_across_a_crash_before_the_ack(platform: Platform) -> None:
    plane = platform.plane(Region.EU)
    recs = records(5)
    plane.events.append(SHOP, recs[:3], actor="serving")
    consumer = plane.events.consumer("requests", SERVED)
    batch = consumer.fetch(10, timeout_s=1.0)
    requests_sink(plane)(SHOP, batch)  # committed to the DB ...
    consumer.close()  # ... and the process dies before its ack
    assert stored(platform) == expected(recs[:3])
    assert ledger_batches(platform) == [batch_details(recs[:3])]
    time.sleep(ACK_WAIT_S + 0.3)  # the unacked batch is delivered again
    worker = Subscription(SERVED, requests_sink(plane)).worker(plane.events, "requests")
    assert worker.drain(timeout_s=20)
    assert worker.stats.events == 3  # redelivered: nothing written twice, no ledger record
    assert stored(platform) == expected(recs[:3])
    assert ledger_batches(platform) == [batch_details(recs[:3])]
    plane.events.append(SHOP, [*recs[3:], recs[0]], actor="serving")  # a repeat: de-duplicated
    assert worker.drain(timeout_s=20)
    assert worker.stats.events == 5
    assert stored(platform) == expected(recs)  # each row once
    assert ledger_batches(platform) == [batch_details(recs[:3]), batch_details(recs[3:])]
    assert plane.ledger.verify().ok
    assert plane.events.consumer("requests", SERVED).lag().total == 0


def test_a_failed_write_is_handed_back_and_stored_later(platform: Platform) -> None:
    plane = platform.plane(Region.EU)
    recs = records(4)
    plane.events.append(SHOP, recs, actor="serving")
    write = requests_sink(plane)
    locked = True

    def flaky(scope: Scope, deliveries: Sequence[Delivery[ServedRecord]]) -> None:
        if locked:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        write(scope, deliveries)

    worker = Subscription(SERVED, flaky).worker(plane.events, "requests")
    with pytest.raises(OperationalError):
        worker.step()
    assert stored(platform) == [] and ledger_batches(platform) == []
    lag = worker.consumer.lag()
    assert lag.total == 4 and lag.ack_floor == 0  # nothing acknowledged
    locked = False
    assert worker.drain(timeout_s=20)
    assert stored(platform) == expected(recs)
    assert [b["count"] for b in ledger_batches(platform)] == [4]


def test_events_stats_show_the_requests_lag_and_consume_stores_the_backlog(
    platform: Platform,
) -> None:
    plane = platform.plane(Region.EU)
    event = LogEvent("e1", "u", "i1", 1_700_000_000, "view", 1.0)
    plane.events.append(SHOP, [event, *records(3)], actor="serving")
    for name in ("online", "offline"):
        plane.events.consumer(name)
    plane.events.consumer("requests", SERVED)
    stats = event_stats(platform, "shop", actor="t")
    assert stats["consumers"] == {"offline": 1, "online": 1, "requests": 3}
    assert stats["log"] == {"events": 1, "last_seq": 4}
    workers = consume(platform, Region.EU, ["requests"], once=True)
    assert [w.stats.events for w in workers] == [3]
    stats = event_stats(platform, "shop", actor="t")
    assert stats["consumers"] == {"offline": 1, "online": 1, "requests": 0}
    assert stats["consumer_detail"]["requests"] == {"pending": 0, "unacknowledged": 0}
    assert stored(platform) == expected(records(3))
