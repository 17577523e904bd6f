"""The DP budget chart: server-rendered inline SVG (no script, no network).

One bar per charged run or federated round (its charge: how much it raised the composed
epsilon), the cumulative spent epsilon as a step line, and the cap in force at each run as
a dashed step line, ending at the current cap ("now").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 52, 110, 24, 46
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


def _kind_class(kind: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", kind.lower())[:32] or "other"


def _num(value: float) -> str:
    return f"{value:.1f}"


@dataclass(frozen=True)
class _Frame:
    """The plot's geometry: one slot per run plus "now", values up to `top_value`."""

    slots: int
    top_value: float

    @property
    def slot(self) -> float:
        """The width of one run's slot."""
        return PLOT_W / self.slots

    def y(self, value: float) -> float:
        """The vertical position of an epsilon value."""
        return TOP + PLOT_H - PLOT_H * value / self.top_value


def budget_chart(runs: list[dict[str, Any]], cap: float, spent: float) -> Markup:
    """The chart of a tenant's runs (`audit.reports` rows, oldest first) against its cap."""
    top_value = max([cap, spent, *(float(r["cap_then"]) for r in runs), 1e-9]) * 1.15
    frame = _Frame(len(runs) + 1, top_value)  # the last slot is "now": the current cap and total
    parts: list[str] = [
        f'<svg class="budget-chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="DP budget: {len(runs)} charged runs, epsilon {spent:.3f} spent of cap '
        f'{cap:g}">',
        *_grid(frame),
    ]
    spent_points = [f"{LEFT},{_num(frame.y(0))}"]
    cap_points: list[str] = []
    for i, run in enumerate(runs):
        parts += _run_bar(frame, i, run)
        x0 = LEFT + i * frame.slot
        x1 = x0 + frame.slot
        total, cap_then = float(run["epsilon_total_after"]), float(run["cap_then"])
        spent_points += [f"{_num(x0)},{_num(frame.y(total))}", f"{_num(x1)},{_num(frame.y(total))}"]
        cap_points += [
            f"{_num(x0)},{_num(frame.y(cap_then))}",
            f"{_num(x1)},{_num(frame.y(cap_then))}",
        ]
    parts.append(_now(frame, cap, spent, cap_points, spent_points))
    if not runs:
        parts.append(
            f'<text class="empty" x="{LEFT + PLOT_W / 2:.0f}" '
            f'y="{TOP + PLOT_H / 2:.0f}" '
            f'text-anchor="middle">no DP runs or federated rounds charged yet</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped or numeric


def _grid(frame: _Frame) -> list[str]:
    """The horizontal grid lines with their values, and the axis' label."""
    parts = []
    for k in range(5):
        value = frame.top_value * k / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + PLOT_W}" '
            f'y1="{_num(frame.y(value))}" y2="{_num(frame.y(value))}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{_num(frame.y(value) + 4)}" '
            f'text-anchor="end">{value:.2f}</text>'
        )
    middle = TOP + PLOT_H / 2
    parts.append(
        f'<text class="axis-label" x="14" y="{middle:.0f}" '
        f'transform="rotate(-90 14 {middle:.0f})" text-anchor="middle">epsilon</text>'
    )
    return parts


def _run_bar(frame: _Frame, i: int, run: dict[str, Any]) -> list[str]:
    """Run `i`'s bar (its charge, described in its tooltip) and its number."""
    x0, slot = LEFT + i * frame.slot, frame.slot
    charge = float(run["charge"])
    total = float(run["epsilon_total_after"])
    bar_h = max(PLOT_H * charge / frame.top_value, 1.0)
    kind = str(run["kind"])
    label = (
        f"{kind} {run['run_id'][:8]} ({str(run['created_at'])[:19]}): charged epsilon "
        f"{charge:.3f} (run alone {float(run['epsilon']):.3f}), total {total:.3f} of cap "
        f"{float(run['cap_then']):g}"
    )
    if run.get("round") is not None:
        label += f", round {run['round']}"
    parts = [
        f'<rect class="bar bar-{_kind_class(kind)}" data-kind="{escape(kind)}" '
        f'data-run-id="{escape(run["run_id"])}" data-charge="{charge:.6f}" '
        f'x="{_num(x0 + slot * 0.2)}" y="{_num(frame.y(0) - bar_h)}" '
        f'width="{_num(slot * 0.6)}" height="{_num(bar_h)}">'
        f"<title>{escape(label)}</title></rect>"
    ]
    if frame.slots <= 25 or i % max(1, frame.slots // 12) == 0:
        parts.append(
            f'<text class="tick" x="{_num(x0 + slot / 2)}" y="{TOP + PLOT_H + 16}" '
            f'text-anchor="middle">{i + 1}</text>'
        )
    return parts


def _now(
    frame: _Frame, cap: float, spent: float, cap_points: list[str], spent_points: list[str]
) -> str:
    """The "now" slot, the cap and spent lines with their labels, and the x axis."""
    slot, y = frame.slot, frame.y
    now_x = LEFT + (frame.slots - 1) * slot
    cap_points = [
        *cap_points,
        f"{_num(now_x)},{_num(y(cap))}",
        f"{_num(LEFT + PLOT_W)},{_num(y(cap))}",
    ]
    spent_points = [*spent_points, f"{_num(LEFT + PLOT_W)},{_num(y(spent))}"]
    cap_y, spent_y = y(cap) + 4, y(spent) + 4
    if abs(cap_y - spent_y) < 14:  # keep the two labels apart
        shift = (14 - abs(cap_y - spent_y)) / 2
        cap_y, spent_y = (
            (cap_y - shift, spent_y + shift) if cap >= spent else (cap_y + shift, spent_y - shift)
        )
    return (
        f'<text class="tick" x="{_num(now_x + slot / 2)}" y="{TOP + PLOT_H + 16}" '
        f'text-anchor="middle">now</text>'
        f'<text class="axis-label" x="{LEFT + PLOT_W / 2:.0f}" y="{HEIGHT - 8}" '
        f'text-anchor="middle">charged runs and rounds, oldest first</text>'
        f'<polyline class="cap-line" points="{" ".join(cap_points)}"/>'
        f'<polyline class="spent-line" points="{" ".join(spent_points)}"/>'
        f'<text class="cap-label" x="{LEFT + PLOT_W + 6}" y="{_num(cap_y)}">'
        f"cap {cap:g}</text>"
        f'<text class="spent-label" x="{LEFT + PLOT_W + 6}" y="{_num(spent_y)}">'
        f"spent {spent:.2f}</text>"
        f'<line class="axis" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{_num(y(0))}" '
        f'y2="{_num(y(0))}"/>'
    )
