"""The JetStream consumer's batched pulls: positions from reply subjects, one JSON parse per
batch, and a bad message in a batch dropped (terminated) without holding up the rest."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from atlasrec.eventlog.jetstream import JetStreamEventLog
from atlasrec.eventlog.pull import position
from atlasrec.eventlog.records import LogEvent
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope, SharingPolicy

NATS_URL = os.environ.get("ATLASREC_TEST_NATS_URL", "nats://127.0.0.1:4222")
US = Scope("shop", Region.US)


def test_position_reads_both_reply_layouts() -> None:
    v1 = "$JS.ACK.S.c.3.41.7.1700000000000000000.9"
    v2 = "$JS.ACK.dom.acchash.S.c.2.58.8.1700000000000000000.0.tok"
    assert position(v1) == (41, 3)
    assert position(v2) == (58, 2)


def test_decode_many_equals_decode_and_refuses_a_body_of_two_events() -> None:
    evs = [LogEvent(f"e{k}", f"u{k}", f"i{k}", 1_700_000_000 + k, "view", k) for k in range(4)]
    bodies = [e.encode() for e in evs]
    assert LogEvent.decode_many(bodies) == [LogEvent.decode(b) for b in bodies] == evs
    smuggled = [bodies[0] + b"," + bodies[1], bodies[2]]  # 2 messages holding 3 events
    with pytest.raises(ValueError):
        LogEvent.decode_many(smuggled)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[JetStreamEventLog]:
    platform = Platform(Settings(home=tmp_path))
    platform.create_tenant("shop", region=Region.US, sharing=SharingPolicy.SOLO, actor="t")
    boundary = platform.plane(Region.US).boundary
    log = JetStreamEventLog(
        Region.US, boundary, NATS_URL, root=f"t{uuid.uuid4().hex[:10]}", ack_wait_s=1.0
    )
    yield log
    log.delete()
    log.close()
    platform.close()


async def _publish_raw(subject: str, body: bytes) -> None:
    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().publish(subject, body)
    finally:
        await nc.close()


@pytest.mark.nats
def test_a_bad_message_in_a_batch_is_dropped_and_the_rest_delivered_in_order(
    log: JetStreamEventLog,
) -> None:
    good = [LogEvent(f"e{k}", "u", "i", 1_700_000_000 + k, "view", 1.0) for k in range(4)]
    log.append(US, good[:2], actor="t")
    asyncio.run(_publish_raw(f"{log.root}.us.events.shop", b'["x", "not an event"]'))
    log.append(US, good[2:], actor="t")
    consumer = log.consumer("offline")
    batch = consumer.fetch(10, timeout_s=0.5)
    assert [d.seq for d in batch] == [1, 2, 4, 5]
    assert [d.event for d in batch] == good
    consumer.ack(batch)
    time.sleep(1.3)  # past ack_wait: a dropped message is terminated, never delivered again
    assert consumer.fetch(10, timeout_s=0.3) == []
    assert consumer.lag().total == 0
    consumer.close()
