"""The DP budget chart: server-rendered inline SVG (no script, no network).

Time runs along x, from the tenant's first event (its creation, first cap or first run) to
now, in UTC. Each charged run or federated round is a bar at its `created_at`, as tall as
its increment (how much it raised the composed total); runs too close in time to be told
apart are dodged sideways so none hides another (bars get thinner with many runs, so that a
burst spreads over at most about a quarter of the axis). The composed total is a step line, the
cap a dashed step line that steps where an officer's change was applied, each change
marked and labelled. Hovering a bar or a change marker shows its details (SVG `<title>`).

When the cap is far above what is spent (more than `BREAK_RATIO` times), a linear axis
would flatten every bar to nothing, so the epsilon axis is broken: the lower part is scaled
to the spent values with its own round ticks, and above a visible break sits a narrow band
where the cap line and its value are drawn, not to scale (log-spaced when the cap history
holds several values). A log scale was not chosen: bars of increments start at zero, which a
log axis cannot show, and officers read bar heights as amounts. An inset would repeat the
runs twice. When cap and spent are of similar size, the axis is plain linear.

Labels are placed so that none overlaps another or leaves the viewBox: margins are sized to
the labels, time ticks that would touch a neighbour are dropped, and a cap change label that
finds no free spot is left to its marker's tooltip.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

from audit.ui.chart_scales import (
    BREAK_GAP,
    EpsilonScale,
    TimeScale,
    bar_width,
    dodge,
    epsilon_scale,
)
from audit.ui.chart_ticks import TimeTick, tick_text, time_context, time_label, time_step
from audit.ui.chart_ticks import time_ticks as _time_ticks

WIDTH, HEIGHT = 760, 320
TOP, BOTTOM = 34, 58
FONT = 11.0
CHAR_EM = 0.68  # a generous width of one character, in em, for laying labels out
MAX_BAR, MIN_BAR_H = 12.0, 2.5
MIN_SPAN = timedelta(seconds=10)

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass(frozen=True)
class _Run:
    """One charged run or round as the chart draws it."""

    index: int
    run_id: str
    kind: str
    status: str
    at: datetime | None
    standalone: float
    increment: float
    total: float
    cap_then: float
    round: Any

    @classmethod
    def of(cls, position: int, row: dict[str, Any]) -> _Run:
        """A report row (`audit.reports` run rows)."""
        return cls(
            index=int(row.get("index") or position),
            run_id=str(row["run_id"]),
            kind=str(row["kind"]),
            status=str(row.get("status", "")),
            at=parse_time(row.get("created_at")),
            standalone=float(row["epsilon_standalone"]),
            increment=float(row["epsilon_increment"]),
            total=float(row["epsilon_total_after"]),
            cap_then=float(row["cap_then"]),
            round=row.get("round"),
        )


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 text (or datetime) as an aware UTC datetime; None if it is not one."""
    if isinstance(value, str) and value:
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def text_width(text: str, size: float = FONT) -> float:
    """A generous estimate of a label's width."""
    return CHAR_EM * size * len(text)


def text_box(x: float, y: float, text: str, anchor: str = "start") -> Box:
    """The box a label at baseline (x, y) covers."""
    width = text_width(text)
    x0 = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    return (x0, y - 0.8 * FONT, x0 + width, y + 0.25 * FONT)


def overlaps(a: Box, b: Box, margin: float = 0.0) -> bool:
    """Whether two boxes come closer than `margin`."""
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _num(value: float) -> str:
    return f"{value:.1f}"


def _eps(value: float) -> str:
    return f"{value:.3f}"


def _text(cls: str, x: float, y: float, text: str, anchor: str = "start") -> str:
    return (
        f'<text class="{cls}" x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}">'
        f"{escape(text)}</text>"
    )


def _line(cls: str, x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line class="{cls}" x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}"/>'


def _kind_class(kind: str) -> str:
    return (
        "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in kind.lower())[:32]
        or "other"
    )


def _stamp(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "time unknown"


@dataclass
class _Canvas:
    """The chart being drawn: its scales, its SVG parts and the boxes its labels take."""

    x: TimeScale
    y: EpsilonScale
    left: float
    right: float
    parts: list[str]
    boxes: list[Box]

    def label(self, cls: str, x: float, y: float, text: str, anchor: str = "start") -> None:
        """A label whose place is already known to be free."""
        self.parts.append(_text(cls, x, y, text, anchor))
        self.boxes.append(text_box(x, y, text, anchor))

    def free(self, box: Box, *, x0: float = 0.0, x1: float = WIDTH, margin: float = 2.0) -> bool:
        """Whether a label's box is inside (x0, x1) and the viewBox and touches no other."""
        inside = box[0] >= x0 and box[2] <= x1 and box[1] >= 0 and box[3] <= HEIGHT
        return inside and not any(overlaps(box, b, margin) for b in self.boxes)


def budget_chart(
    runs: list[dict[str, Any]],
    cap: float,
    spent: float,
    cap_history: Sequence[dict[str, Any]] = (),
    now: datetime | None = None,
) -> Markup:
    """The chart of a tenant's runs (report rows, oldest first) and cap history over time."""
    now = parse_time(now) or datetime.now(UTC)
    rows = [_Run.of(i, row) for i, row in enumerate(runs, start=1)]
    history = _cap_steps(cap_history, cap)
    start, end = _time_range(rows, history, now)
    caps = [c for _, c in history] + [cap]
    data_top = max([spent, *(r.total for r in rows)])
    yscale = epsilon_scale(data_top, caps, TOP, HEIGHT - BOTTOM)
    cap_text, spent_text = f"cap {cap:g}", f"spent {_eps(spent)}"
    left = max(44.0, 14 + max(text_width(tick_text(t, yscale.ticks)) for t in yscale.ticks))
    right = WIDTH - 12 - max(text_width(cap_text), text_width(spent_text))
    pad = MAX_BAR / 2 + 3
    canvas = _Canvas(TimeScale(start, end, left + pad, right - pad), yscale, left, right, [], [])
    _y_axis(canvas)
    _x_axis(canvas)
    _right_labels(canvas, cap_text, yscale.y(cap), spent_text, yscale.y(spent))
    _cap_line(canvas, history, cap)
    _bars_and_spent(canvas, rows, spent)
    if not rows:
        middle = (yscale.tick_top + yscale.bottom) / 2
        canvas.label(
            "empty",
            (left + right) / 2,
            middle,
            "no DP runs or federated rounds charged yet",
            "middle",
        )
    summary = _summary(rows, history, cap, spent, start, yscale)
    head = (
        f'<svg class="budget-chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(summary)}">'
    )
    return Markup(head + "".join(canvas.parts) + "</svg>")  # noqa: S704 - texts are escaped


def _cap_steps(
    cap_history: Iterable[dict[str, Any]], cap: float
) -> list[tuple[datetime | None, float]]:
    """The cap history as (time or None for "from the start", cap), oldest first."""
    steps = [(parse_time(p.get("ts")), float(p["cap"])) for p in cap_history]
    return steps or [(None, cap)]


def _time_range(
    rows: list[_Run], history: list[tuple[datetime | None, float]], now: datetime
) -> tuple[datetime, datetime]:
    """The axis' span: the first event (run or cap point) to now."""
    times = [r.at for r in rows if r.at] + [ts for ts, _ in history if ts]
    start = min(times, default=now - MIN_SPAN)
    end = max([now, *times])
    return start, max(end, start + MIN_SPAN)


def _summary(
    rows: list[_Run],
    history: list[tuple[datetime | None, float]],
    cap: float,
    spent: float,
    start: datetime,
    yscale: EpsilonScale,
) -> str:
    """The chart in words, for screen readers."""
    changes = sum(1 for (_, a), (ts, b) in itertools.pairwise(history) if ts and a != b)
    text = (
        f"DP budget over time, {start:%Y-%m-%d %H:%M} UTC to now: {len(rows)} charged runs "
        f"and rounds; composed epsilon spent {_eps(spent)} of cap {cap:g}"
    )
    if changes:
        text += f"; the cap changed {changes} time{'s' if changes > 1 else ''}"
    if yscale.broken:
        text += "; the epsilon axis is broken: the cap band above the break is not to scale"
    return text


def _y_axis(canvas: _Canvas) -> None:
    """Grid lines with round ticks, the axis and, when broken, the cap band and break marks."""
    y, left, right = canvas.y, canvas.left, canvas.right
    for value in y.ticks:
        at = y.y(value)
        canvas.parts.append(_line("grid", left, at, right, at))
        canvas.label("tick value-tick", left - 7, at + 4, tick_text(value, y.ticks), "end")
    canvas.parts.append(_line("axis", left, y.bottom, left, y.tick_top))
    canvas.label("axis-label", 6, TOP - 16, "epsilon")
    if y.band is None:
        return
    band_top, band_bottom = TOP, y.tick_top - BREAK_GAP
    canvas.parts.append(
        f'<rect class="cap-band" x="{_num(left)}" y="{_num(band_top)}" '
        f'width="{_num(right - left)}" height="{_num(band_bottom - band_top)}"/>'
        + _line("axis", left, band_bottom, left, band_top)
    )
    marks = "".join(
        _line("break-mark", x - 5, at + 3, x + 5, at - 3)
        for x in (left, right)
        for at in (band_bottom, y.tick_top)
    )
    canvas.parts.append(
        f'<g class="axis-break"><title>axis broken: the cap band above is not to the '
        f"scale of the spent values below</title>{marks}</g>"
    )


def _x_axis(canvas: _Canvas) -> None:
    """The time axis: the start, round time ticks that fit, "now", and the axis title."""
    x, base = canvas.x, canvas.y.bottom
    canvas.parts.append(_line("axis", canvas.left, base, canvas.right, base))
    step = time_step(0, x.px_per_s, text_width("2026-12-06") + 12)
    first_y, second_y = base + 15, base + 28
    start_label = time_label(x.start, step)
    previous = time_context(x.start, step)
    canvas.label("tick time-tick", canvas.left, first_y, start_label)
    canvas.label("tick time-context", canvas.left, second_y, previous)
    canvas.label("tick time-tick", canvas.right, first_y, "now", "end")
    for tick in _time_ticks(x.start, x.end, step):
        previous = _time_tick(canvas, tick, first_y, second_y, previous)
    canvas.label("axis-label", (canvas.left + canvas.right) / 2, HEIGHT - 6, "time (UTC)", "middle")


def _time_tick(
    canvas: _Canvas, tick: TimeTick, first_y: float, second_y: float, previous: str
) -> str:
    """One time tick with its label if it fits; returns the date context now shown."""
    at = canvas.x.x(tick.at)
    context = tick.context if tick.context != previous else ""
    boxes = [text_box(at, first_y, tick.label, "middle")]
    if context:
        boxes.append(text_box(at, second_y, context, "middle"))
    if not all(canvas.free(b, margin=8) for b in boxes):
        return previous
    base = canvas.y.bottom
    canvas.parts.append(_line("axis", at, base, at, base + 4))
    canvas.label("tick time-tick", at, first_y, tick.label, "middle")
    if context:
        canvas.label("tick time-context", at, second_y, context, "middle")
        return context
    return previous


def _right_labels(
    canvas: _Canvas, cap_text: str, cap_y: float, spent_text: str, spent_y: float
) -> None:
    """The current cap and spent values at the lines' right ends, kept apart."""
    cap_y, spent_y = cap_y + 4, spent_y + 4
    if abs(cap_y - spent_y) < 14:
        middle = (cap_y + spent_y) / 2
        cap_y, spent_y = (middle - 7, middle + 7) if cap_y <= spent_y else (middle + 7, middle - 7)
    x = canvas.right + 6
    canvas.label("cap-label", x, min(max(cap_y, 12), HEIGHT - BOTTOM + 4), cap_text)
    canvas.label("spent-label", x, min(max(spent_y, 12), HEIGHT - BOTTOM + 4), spent_text)


def _cap_line(canvas: _Canvas, history: list[tuple[datetime | None, float]], cap: float) -> None:
    """The cap as a dashed step line, each applied change marked and labelled."""
    y = canvas.y.y
    level = history[0][1]
    points = [(canvas.left, y(level))]
    markers: list[str] = []
    for ts, value in [*history[1:], (canvas.x.end, cap)]:
        if ts is None or value == level:
            continue
        at = canvas.x.x(ts)
        points += [(at, y(level)), (at, y(value))]
        markers.append(_cap_change(canvas, at, ts, level, value))
        level = value
    points.append((canvas.right, y(level)))
    text = " ".join(f"{_num(px)},{_num(py)}" for px, py in points)
    canvas.parts.append(f'<polyline class="cap-line" points="{text}"/>')
    canvas.parts += markers


def _cap_change(canvas: _Canvas, at: float, ts: datetime, old: float, new: float) -> str:
    """A change's marker (its details on hover) and, where a free spot is found, its label."""
    y = canvas.y.y
    text = f"cap {old:g} → {new:g}"
    upper, lower = min(y(old), y(new)), max(y(old), y(new))
    for lx, ly, anchor in (
        (at + 5, upper - 5, "start"),
        (at - 5, upper - 5, "end"),
        (at + 5, lower + 13, "start"),
        (at - 5, lower + 13, "end"),
    ):
        if canvas.free(text_box(lx, ly, text, anchor), x0=canvas.left, x1=canvas.right):
            canvas.label("cap-change-label", lx, ly, text, anchor)
            break
    return (
        f'<circle class="cap-change" cx="{_num(at)}" cy="{_num(y(new))}" r="3.5">'
        f"<title>{escape(text)}, applied {_stamp(ts)}</title></circle>"
    )


def _bars_and_spent(canvas: _Canvas, rows: list[_Run], spent: float) -> None:
    """A bar per run (its increment), dodged apart, and the composed total as a step line."""
    x, y = canvas.x, canvas.y.y
    width, gap = bar_width(len(rows), canvas.right - canvas.left, MAX_BAR)
    ideal = [x.x(r.at) if r.at else x.lo for r in rows]
    centres = dodge(ideal, width, gap, canvas.left + 1, canvas.right - 1)
    zero = y(0)
    points, total = [(canvas.left, zero)], 0.0
    for run, centre in zip(rows, centres, strict=True):
        height = max(zero - y(run.increment), MIN_BAR_H)
        canvas.parts.append(
            f'<rect class="bar bar-{_kind_class(run.kind)}" data-kind="{escape(run.kind)}" '
            f'data-run-id="{escape(run.run_id)}" data-index="{run.index}" '
            f'data-increment="{run.increment:.6f}" x="{_num(centre - width / 2)}" '
            f'y="{_num(zero - height)}" width="{_num(width)}" height="{_num(height)}">'
            f"<title>{escape(_tooltip(run))}</title></rect>"
        )
        riser = centre + width / 2  # the total steps up at the bar's right edge
        points += [(riser, y(total)), (riser, y(run.total))]
        total = run.total
    points.append((canvas.right, y(spent)))
    text = " ".join(f"{_num(px)},{_num(py)}" for px, py in points)
    canvas.parts.append(f'<polyline class="spent-line" points="{text}"/>')


def _tooltip(run: _Run) -> str:
    """A bar's hover text: the run's index, what it was, and its three epsilons by name."""
    what = f"{run.kind} round {run.round}" if run.round is not None else run.kind
    return "\n".join(
        (
            f"#{run.index} {what} ({run.status}), {_stamp(run.at)}",
            f"run {run.run_id}",
            f"standalone ε {_eps(run.standalone)}",
            f"increment {_eps(run.increment)}",
            f"composed total after {_eps(run.total)}",
            f"cap then {run.cap_then:g}",
        )
    )
