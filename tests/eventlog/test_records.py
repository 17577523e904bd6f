"""Log records: an event that responds to a served request carries its id and position."""

from __future__ import annotations

import json

import pytest

from atlasrec.eventlog.records import LogEvent


def test_attributed_and_plain_events_round_trip_and_old_messages_still_decode() -> None:
    plain = LogEvent("e1", "u1", "i1", 1_700_000_000, "view", 0.5)
    attributed = LogEvent("e2", "u1", "i2", 1_700_000_001, "click", 1.0, "a" * 32, 3)
    assert LogEvent.decode_many([plain.encode(), attributed.encode()]) == [plain, attributed]
    assert len(json.loads(plain.encode())) == 6  # unattributed events are as they were
    before = json.dumps(["e0", "u0", "i0", 1_699_999_999, "interaction", 1.0]).encode()
    assert LogEvent.decode(before) == LogEvent("e0", "u0", "i0", 1_699_999_999, "interaction", 1.0)


@pytest.mark.parametrize("extra", [["a" * 32], ["a" * 32, 1, "more"]])
def test_a_row_of_another_length_is_refused(extra: list[object]) -> None:
    body = json.dumps(["e", "u", "i", 1, "view", 1.0, *extra]).encode()
    with pytest.raises(ValueError):
        LogEvent.decode(body)
