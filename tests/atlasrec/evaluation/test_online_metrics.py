"""Online metrics: outcomes attributed to positions of served lists, per day and version."""

from __future__ import annotations

import math

import pytest

from atlasrec.evaluation.online import Outcome, ServedList, attributed_position, online_metrics


def served(
    n: int,
    items: str,
    *,
    day: str = "2026-12-01",
    version: str = "v1",
    ms: float = 10.0,
    degraded: bool = False,
) -> ServedList:
    return ServedList(f"r{n}", day, version, tuple(items), ms, degraded)


def test_an_outcome_is_attributed_where_its_item_is() -> None:
    request = served(1, "abcd")
    assert attributed_position(request.items, Outcome("r1", "c", None, "click")) == 2
    assert attributed_position(request.items, Outcome("r1", "c", 2, "click")) == 2
    assert attributed_position(request.items, Outcome("r1", "c", 1, "click")) is None  # b is there
    assert (
        attributed_position(request.items, Outcome("r1", "c", 7, "click")) is None
    )  # past the end
    assert attributed_position(request.items, Outcome("r1", "z", None, "click")) is None


def test_clicks_conversions_and_ctr_count_distinct_positions_below_k() -> None:
    lists = [served(1, "abcd"), served(2, "bcde"), served(3, "cdef", version="v2")]
    outcomes = [
        Outcome("r1", "a", 0, "click"),
        Outcome("r1", "a", 0, "click"),  # the same position twice: one click
        Outcome("r1", "d", None, "purchase"),  # a purchase is a click and a conversion
        Outcome("r2", "e", 3, "click"),  # position 3 is not below k=3
        Outcome("r2", "b", 0, "view"),  # a view is no click
        Outcome("r2", "a", 0, "click"),  # a is not in r2: unattributed
        Outcome("r9", "a", 0, "click"),  # no such request in the window
        Outcome("r3", "c", 0, "add_to_cart"),
    ]
    v1, v2 = online_metrics(lists, outcomes, k=3, catalog_size=10, popularity={})
    assert (v1.model_version, v1.requests, v1.impressions) == ("v1", 2, 6)
    assert (v1.clicks, v1.conversions, v1.unattributed) == (1, 1, 1)  # d sits at 3: not < k
    assert v1.ctr_at_k == pytest.approx(1 / 6)
    assert v1.conversions_per_request == pytest.approx(0.5)
    assert v1.coverage == pytest.approx(len(set("abcbcd")) / 10)
    assert (v2.clicks, v2.conversions, v2.ctr_at_k) == (1, 0, pytest.approx(1 / 3))


def test_novelty_latency_and_degraded_share() -> None:
    lists = [
        served(1, "ab", ms=10.0),
        served(2, "ab", ms=20.0, degraded=True),
        served(3, "ab", ms=30.0),
        served(4, "ab", ms=1000.0),
    ]
    popularity = {"a": 7, "b": 1}
    (row,) = online_metrics(lists, [], k=10, catalog_size=2, popularity=popularity)
    total = 7 + 1 + 2
    expected = (-math.log2(8 / total) - math.log2(2 / total)) / 2
    assert row.novelty == pytest.approx(expected)
    assert row.degraded_share == pytest.approx(0.25)
    assert row.latency_ms["p50"] == pytest.approx(25.0)
    assert 30.0 < row.latency_ms["p95"] < row.latency_ms["p99"] < 1000.0


def test_days_and_versions_are_separate_arms() -> None:
    lists = [served(1, "a", day="2026-12-02"), served(2, "a"), served(3, "a", version="v2")]
    rows = online_metrics(lists, [], k=10, catalog_size=5, popularity={})
    assert [(r.day, r.model_version, r.requests) for r in rows] == [
        ("2026-12-01", "v1", 1),
        ("2026-12-01", "v2", 1),
        ("2026-12-02", "v1", 1),
    ]
