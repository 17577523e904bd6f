"""The DP budget chart (`audit.ui.chart`), read back as SVG: time along x, round ticks,
readable bars at any cap, the cap history as a step line, and labels that fit and never
overlap. Report rows are built here, synthetic, with the chart's input names.
"""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.ui.chart import budget_chart
from audit.ui.chart_ticks import nice_ticks

NS = {"s": "http://www.w3.org/2000/svg"}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
FONT = 11.0
KINDS = ("train", "federation", "popularity")


def rows(spec: list[tuple[timedelta, float]], cap: float = 10.0) -> list[dict[str, Any]]:
    """Report rows for runs at T0 + offset, each raising the composed total by an increment."""
    out, total = [], 0.0
    for i, (offset, increment) in enumerate(spec, start=1):
        total += increment
        out.append(
            {
                "index": i,
                "run_id": f"run-{i:03d}",
                "kind": KINDS[i % 3],
                "status": "completed",
                "created_at": (T0 + offset).isoformat(),
                "epsilon_standalone": increment * 2,
                "epsilon_increment": increment,
                "epsilon_total_after": total,
                "cap_then": cap,
                "round": i if KINDS[i % 3] == "federation" else None,
            }
        )
    return out


def chart(
    runs: list[dict[str, Any]],
    cap: float,
    history: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> ET.Element:
    spent = max((r["epsilon_total_after"] for r in runs), default=0.0)
    history = history if history is not None else [{"ts": (T0 - HOUR).isoformat(), "cap": cap}]
    svg = budget_chart(runs, cap, spent, history, now=now or T0 + 10 * DAY)
    return ET.fromstring(str(svg))


def bars(svg: ET.Element) -> list[ET.Element]:
    return [r for r in svg.findall(".//s:rect", NS) if "bar" in r.get("class", "").split()]


def texts(svg: ET.Element, cls: str | None = None) -> list[ET.Element]:
    found = svg.findall(".//s:text", NS)
    return [t for t in found if cls is None or cls in t.get("class", "").split()]


def points(svg: ET.Element, cls: str) -> list[tuple[float, float]]:
    (line,) = svg.findall(f".//s:polyline[@class='{cls}']", NS)
    return [(float(x), float(y)) for x, y in (p.split(",") for p in line.get("points", "").split())]


def centre(bar: ET.Element) -> float:
    return float(bar.get("x", 0)) + float(bar.get("width", 0)) / 2


def text_box(text: ET.Element) -> tuple[float, float, float, float]:
    """A text's box, estimated: 0.6 x font size per character, baseline at y."""
    width = 0.6 * FONT * len(text.text or "")
    x, y = float(text.get("x", 0)), float(text.get("y", 0))
    x0 = {"start": x, "middle": x - width / 2, "end": x - width}[text.get("text-anchor", "start")]
    return (x0, y - 0.75 * FONT, x0 + width, y + 0.2 * FONT)


SEEDED = rows(
    [(timedelta(0), 0.827), (timedelta(seconds=0.2), 0.1), (timedelta(0), 0.092), (HOUR, 0.3)]
)
SCENARIOS = {
    "seeded cap 10": chart(SEEDED, 10.0),
    "seeded cap 1000": chart(
        SEEDED,
        1000.0,
        [{"ts": None, "cap": 10.0}, {"ts": (T0 + 2 * HOUR).isoformat(), "cap": 1000.0}],
    ),
    "many runs, three caps": chart(
        rows([(i * 7 * HOUR, 0.2 + 0.05 * (i % 4)) for i in range(40)]),
        1000.0,
        [
            {"ts": None, "cap": 10.0},
            {"ts": (T0 + 3 * DAY).isoformat(), "cap": 50.0},
            {"ts": (T0 + 3 * DAY + HOUR).isoformat(), "cap": 60.0},
            {"ts": (T0 + 5 * DAY).isoformat(), "cap": 1000.0},
        ],
    ),
    "cap lowered": chart(
        rows([(i * DAY, 0.7) for i in range(6)]),
        4.0,
        [{"ts": None, "cap": 10.0}, {"ts": (T0 + 2.5 * DAY).isoformat(), "cap": 4.0}],
    ),
    "empty": chart([], 10.0),
    "single": chart(rows([(HOUR, 0.8)]), 1.0, now=T0 + 2 * HOUR),
    "seconds apart": chart(rows([(timedelta(seconds=s), 0.3) for s in range(5)]), 3.0, now=T0),
}


def test_value_ticks_are_round_1_2_5_numbers() -> None:
    for name, svg in SCENARIOS.items():
        values = [float(t.text or "") for t in texts(svg, "value-tick")]
        step = values[1] - values[0]
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert round(mantissa, 6) in (1.0, 2.0, 5.0), (name, values)
        assert values == pytest.approx([k * step for k in range(len(values))]), (name, values)


@given(st.floats(min_value=1e-6, max_value=1e9))
def test_nice_ticks_cover_the_top_with_a_few_round_steps(top: float) -> None:
    ticks = nice_ticks(top)
    step = ticks[1] - ticks[0]
    assert ticks[0] == 0 and ticks[-1] >= top * (1 - 1e-9) and 3 <= len(ticks) <= 7
    assert round(step / 10 ** math.floor(math.log10(step)), 6) in (1.0, 2.0, 5.0)


def test_bars_stay_readable_under_a_cap_far_above_the_spent_epsilon() -> None:
    svg = chart(rows([(i * HOUR, 1.0) for i in range(5)], cap=1000.0), 1000.0)
    heights = [float(b.get("height", 0)) for b in bars(svg)]
    assert len(heights) == 5 and min(heights) > 8  # each run is 20% of the spent epsilon
    assert [t.text for t in texts(svg, "cap-label")] == ["cap 1000"]
    assert svg.find(".//s:g[@class='axis-break']", NS) is not None


def test_similar_cap_and_spent_share_one_linear_axis() -> None:
    svg = SCENARIOS["cap lowered"]  # spent 4.2, caps 10 then 4
    assert svg.find(".//s:g[@class='axis-break']", NS) is None
    cap_ys = [y for _, y in points(svg, "cap-line")]
    ticks = {float(t.text or ""): float(t.get("y", 0)) - 4 for t in texts(svg, "value-tick")}
    assert cap_ys[0] == pytest.approx(ticks[10.0], abs=0.1)  # each cap sits at its own tick
    assert cap_ys[-1] == pytest.approx(ticks[4.0], abs=0.1)


def test_bar_heights_are_the_increments_on_one_scale() -> None:
    svg = chart(rows([(i * HOUR, inc) for i, inc in enumerate((0.5, 1.0, 2.0))]), 1000.0)
    heights = [float(b.get("height", 0)) for b in bars(svg)]
    assert heights[1] == pytest.approx(2 * heights[0], abs=0.2)
    assert heights[2] == pytest.approx(4 * heights[0], abs=0.2)


def test_the_cap_steps_at_the_time_of_its_change() -> None:
    runs = rows([(timedelta(0), 0.5), (HOUR, 0.5), (3 * HOUR, 0.5)])
    history = [{"ts": None, "cap": 10.0}, {"ts": (T0 + 2 * HOUR).isoformat(), "cap": 1000.0}]
    svg = chart(runs, 1000.0, history, now=T0 + 4 * HOUR)
    cap = points(svg, "cap-line")
    steps = [(a, b) for a, b in itertools.pairwise(cap) if a[0] == b[0] and a[1] != b[1]]
    assert len(steps) == 1
    (before, after) = steps[0]
    assert after[1] < before[1]  # raised: drawn higher
    x1, x3 = centre(bars(svg)[1]), centre(bars(svg)[2])
    assert (before[0] - x1) / (x3 - x1) == pytest.approx(0.5, abs=0.02)  # 2h lies between 1h and 3h
    (label,) = texts(svg, "cap-change-label")
    assert label.text == "cap 10 → 1000"
    (marker,) = svg.findall(".//s:circle[@class='cap-change']", NS)
    title = marker.findtext("s:title", namespaces=NS) or ""
    assert "cap 10 → 1000" in title and "2026-03-02 11:00:00 UTC" in title


def test_bars_follow_time_in_proportion() -> None:
    svg = chart(rows([(timedelta(0), 0.2), (DAY, 0.2), (10 * DAY, 0.2)]), 1.0, now=T0 + 10 * DAY)
    x = [centre(b) for b in bars(svg)]
    assert x[0] < x[1] < x[2]
    assert (x[1] - x[0]) / (x[2] - x[0]) == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_label_fits_the_view_box_and_touches_no_other(name: str) -> None:
    svg = SCENARIOS[name]
    _, _, width, height = (float(v) for v in svg.get("viewBox", "").split())
    boxes = [(t.text, text_box(t)) for t in texts(svg)]
    for text, (x0, y0, x1, y1) in boxes:
        assert x0 >= 0 and x1 <= width and y0 >= 0 and y1 <= height, (text, x0, y0, x1, y1)
    for (a, ba), (b, bb) in itertools.combinations(boxes, 2):
        apart = ba[2] <= bb[0] or bb[2] <= ba[0] or ba[3] <= bb[1] or bb[3] <= ba[1]
        assert apart, (a, ba, b, bb)


def test_hover_titles_name_the_run_and_its_three_epsilons() -> None:
    svg = SCENARIOS["seeded cap 1000"]
    for i, bar in enumerate(bars(svg), start=1):
        row = SEEDED[i - 1]
        title = bar.findtext("s:title", namespaces=NS) or ""
        assert title.startswith(f"#{i} ") and row["run_id"] in title
        assert f"standalone ε {row['epsilon_standalone']:.3f}" in title
        assert f"increment {row['epsilon_increment']:.3f}" in title
        assert f"composed total after {row['epsilon_total_after']:.3f}" in title
        assert bar.get("data-run-id") == row["run_id"] and bar.get("data-kind") == row["kind"]


def test_a_tenant_without_runs_gets_an_empty_chart() -> None:
    svg = SCENARIOS["empty"]
    assert bars(svg) == []
    assert [t.text for t in texts(svg, "empty")] == ["no DP runs or federated rounds charged yet"]
    assert {y for _, y in points(svg, "spent-line")} == {
        max(y for _, y in points(svg, "spent-line"))
    }


def test_a_single_run_gets_one_bar_and_a_time_axis() -> None:
    svg = SCENARIOS["single"]
    assert len(bars(svg)) == 1
    labels = [t.text for t in texts(svg, "time-tick")]
    assert labels[:2] == ["08:00", "now"] and "10:00" in labels  # created 08:00, run 10:00


def test_runs_at_the_same_moment_stay_side_by_side() -> None:
    svg = chart(rows([(HOUR, 0.4)] * 3 + [(HOUR + timedelta(seconds=1), 0.4)]), 4.0)
    spans = [
        (float(b.get("x", 0)), float(b.get("x", 0)) + float(b.get("width", 0))) for b in bars(svg)
    ]
    assert all(w1 - w0 >= 3 for w0, w1 in spans)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))  # none hides another


def test_the_svg_is_labelled_for_screen_readers() -> None:
    svg = SCENARIOS["seeded cap 1000"]
    label = svg.get("aria-label", "")
    assert svg.get("role") == "img" and "4 charged runs" in label and "cap 1000" in label
    assert "axis is broken" in label and "cap changed 1 time" in label


def test_bad_times_do_not_break_the_chart() -> None:
    runs = rows([(HOUR, 0.4)])
    runs[0]["created_at"] = "not a time"
    svg = chart(runs, 1.0, [{"ts": "garbage", "cap": 1.0}])
    assert len(bars(svg)) == 1 and re.search(r"time unknown", ET.tostring(svg, "unicode"))
