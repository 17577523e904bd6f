"""Repeated refusals of a key: one ledger record per window, with the count, none lost."""

from __future__ import annotations

import json
from typing import Any

import pytest

from atlasrec.boundary import REFUSED
from atlasrec.errors import CrossRegionError
from atlasrec.platform import Platform
from atlasrec.repeated_refusals import RepeatedRefusals
from atlasrec.tenancy import Region, Scope, SharingPolicy

FAR = Scope("far", Region.EU)  # homed in us, asked of eu


@pytest.fixture
def refusals(platform: Platform) -> RepeatedRefusals:
    platform.create_tenant("far", region=Region.US, sharing=SharingPolicy.SOLO, actor="test")
    return RepeatedRefusals(platform.plane(Region.EU).boundary, window_s=60.0, sweep=False)


def recorded(platform: Platform) -> list[dict[str, Any]]:
    ledger = platform.plane(Region.EU).ledger
    return [json.loads(r.details) for r in ledger.records(action=REFUSED, limit=None)]


def attempt(refusals: RepeatedRefusals, key: str) -> None:
    with pytest.raises(CrossRegionError, match="homed in region 'us'"):
        refusals.admit(key, FAR, actor="api-key:far", action="serving.auth")


def test_repeats_are_counted_then_recorded_once_per_window(
    platform: Platform, refusals: RepeatedRefusals, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr("atlasrec.repeated_refusals.time.monotonic", lambda: clock[0])
    for _ in range(5):
        attempt(refusals, "k1")
    assert [r.get("repeats") for r in recorded(platform)] == [None]
    refusals.sweep()  # the window is still open
    assert len(recorded(platform)) == 1
    clock[0] += 60.0
    attempt(refusals, "k1")  # closes the window (4 repeats), opens the next
    records = recorded(platform)
    assert [(r["key"], r.get("repeats")) for r in records] == [
        ("k1", None),
        ("k1", 4),
        ("k1", None),
    ]
    assert records[1]["first_at"] <= records[1]["last_at"]
    attempt(refusals, "k1")
    refusals.close()
    assert [r.get("repeats") for r in recorded(platform)][-1] == 1


def test_an_admitted_scope_is_not_recorded(platform: Platform, refusals: RepeatedRefusals) -> None:
    platform.create_tenant("near", region=Region.EU, sharing=SharingPolicy.SOLO, actor="test")
    refusals.admit("k", Scope("near", Region.EU), actor="api-key:near", action="serving.auth")
    refusals.close()
    assert recorded(platform) == []


def test_repeats_are_kept_while_the_ledger_cannot_record_them(
    platform: Platform, refusals: RepeatedRefusals, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        attempt(refusals, "k1")
    boundary = refusals.boundary

    def down(*args: object, **kwargs: object) -> None:
        raise OSError("ledger unreachable")

    monkeypatch.setattr(boundary, "record", down)
    refusals.sweep(everything=True)
    monkeypatch.undo()
    attempt(refusals, "k1")  # counted in the kept window
    refusals.close()
    assert [r.get("repeats") for r in recorded(platform)] == [None, 3]


def test_many_keys_stay_bounded_and_lose_no_count(
    platform: Platform, refusals: RepeatedRefusals, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RepeatedRefusals, "MAX_KEYS", 3)
    for key in ("a", "a", "b", "b", "c", "d"):
        attempt(refusals, key)
    assert len(refusals._windows) <= 3
    refusals.close()
    repeats = {r["key"]: r["repeats"] for r in recorded(platform) if "repeats" in r}
    assert repeats == {"a": 1, "b": 1}
