"""The DP budget chart: server-rendered inline SVG (no script, no network).

One bar per charged run or federated round (its charge: how much it raised the composed
epsilon), the cumulative spent epsilon as a step line, and the cap in force at each run as
a dashed step line, ending at the current cap ("now").
"""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 52, 110, 24, 46


def _kind_class(kind: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", kind.lower())[:32] or "other"


def _num(value: float) -> str:
    return f"{value:.1f}"


def budget_chart(runs: list[dict[str, Any]], cap: float, spent: float) -> Markup:
    """The chart of a tenant's runs (`audit.reports` rows, oldest first) against its cap."""
    slots = len(runs) + 1  # the last slot is "now": the current cap and total
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / slots
    top_value = max([cap, spent, *(float(r["cap_then"]) for r in runs), 1e-9]) * 1.15

    def y(value: float) -> float:
        return TOP + plot_h - plot_h * value / top_value

    parts: list[str] = [
        f'<svg class="budget-chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="DP budget: {len(runs)} charged runs, epsilon {spent:.3f} spent of cap '
        f'{cap:g}">'
    ]
    for k in range(5):
        value = top_value * k / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" '
            f'y1="{_num(y(value))}" y2="{_num(y(value))}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{_num(y(value) + 4)}" '
            f'text-anchor="end">{value:.2f}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="14" y="{TOP + plot_h / 2:.0f}" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.0f})" text-anchor="middle">epsilon</text>'
    )
    spent_points = [f"{LEFT},{_num(y(0))}"]
    cap_points: list[str] = []
    total = 0.0
    for i, run in enumerate(runs):
        x0 = LEFT + i * slot
        charge = float(run["charge"])
        total = float(run["epsilon_total_after"])
        bar_h = max(plot_h * charge / top_value, 1.0)
        kind = str(run["kind"])
        label = (
            f"{kind} {run['run_id'][:8]} ({str(run['created_at'])[:19]}): charged epsilon "
            f"{charge:.3f} (run alone {float(run['epsilon']):.3f}), total {total:.3f} of cap "
            f"{float(run['cap_then']):g}"
        )
        if run.get("round") is not None:
            label += f", round {run['round']}"
        parts.append(
            f'<rect class="bar bar-{_kind_class(kind)}" data-kind="{escape(kind)}" '
            f'data-run-id="{escape(run["run_id"])}" data-charge="{charge:.6f}" '
            f'x="{_num(x0 + slot * 0.2)}" y="{_num(y(0) - bar_h)}" '
            f'width="{_num(slot * 0.6)}" height="{_num(bar_h)}">'
            f"<title>{escape(label)}</title></rect>"
        )
        if slots <= 25 or i % max(1, slots // 12) == 0:
            parts.append(
                f'<text class="tick" x="{_num(x0 + slot / 2)}" y="{TOP + plot_h + 16}" '
                f'text-anchor="middle">{i + 1}</text>'
            )
        spent_points += [f"{_num(x0)},{_num(y(total))}", f"{_num(x0 + slot)},{_num(y(total))}"]
        cap_then = float(run["cap_then"])
        cap_points += [f"{_num(x0)},{_num(y(cap_then))}", f"{_num(x0 + slot)},{_num(y(cap_then))}"]
    now_x = LEFT + (slots - 1) * slot
    cap_points += [f"{_num(now_x)},{_num(y(cap))}", f"{_num(LEFT + plot_w)},{_num(y(cap))}"]
    spent_points.append(f"{_num(LEFT + plot_w)},{_num(y(spent))}")
    cap_y, spent_y = y(cap) + 4, y(spent) + 4
    if abs(cap_y - spent_y) < 14:  # keep the two labels apart
        shift = (14 - abs(cap_y - spent_y)) / 2
        cap_y, spent_y = (
            (cap_y - shift, spent_y + shift)
            if cap >= spent
            else (
                cap_y + shift,
                spent_y - shift,
            )
        )
    parts.append(
        f'<text class="tick" x="{_num(now_x + slot / 2)}" y="{TOP + plot_h + 16}" '
        f'text-anchor="middle">now</text>'
        f'<text class="axis-label" x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 8}" '
        f'text-anchor="middle">charged runs and rounds, oldest first</text>'
        f'<polyline class="cap-line" points="{" ".join(cap_points)}"/>'
        f'<polyline class="spent-line" points="{" ".join(spent_points)}"/>'
        f'<text class="cap-label" x="{LEFT + plot_w + 6}" y="{_num(cap_y)}">'
        f"cap {cap:g}</text>"
        f'<text class="spent-label" x="{LEFT + plot_w + 6}" y="{_num(spent_y)}">'
        f"spent {spent:.2f}</text>"
        f'<line class="axis" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{_num(y(0))}" '
        f'y2="{_num(y(0))}"/>'
    )
    if not runs:
        parts.append(
            f'<text class="empty" x="{LEFT + plot_w / 2:.0f}" y="{TOP + plot_h / 2:.0f}" '
            f'text-anchor="middle">no DP runs or federated rounds charged yet</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped or numeric
