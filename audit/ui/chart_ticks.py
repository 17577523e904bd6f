"""Axis ticks for the budget chart: round epsilon values and readable UTC times."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

MANTISSAS = (1.0, 2.0, 5.0)
_SECOND, _MINUTE, _HOUR, _DAY = 1, 60, 3600, 86400
TIME_STEPS = (
    *(_SECOND * n for n in (1, 2, 5, 10, 15, 30)),
    *(_MINUTE * n for n in (1, 2, 5, 10, 15, 30)),
    *(_HOUR * n for n in (1, 2, 3, 6, 12)),
    *(_DAY * n for n in (1, 2, 7, 14, 28, 91, 182, 364)),
)


def nice_step(rough: float) -> float:
    """The smallest 1-2-5 x 10^k step at least `rough` (> 0)."""
    power = 10.0 ** math.floor(math.log10(rough))
    for mantissa in MANTISSAS:
        if mantissa * power >= rough * (1 - 1e-9):
            return mantissa * power
    return 10 * power


def nice_ticks(top: float, count: int = 6) -> list[float]:
    """Round ticks from 0 covering `top` (> 0), about `count` of them."""
    step = nice_step(top / max(count - 1, 1))
    n = math.ceil(top / step - 1e-9)
    return [round(k * step, 12) for k in range(n + 1)]


def tick_text(value: float, ticks: list[float]) -> str:
    """A tick value with as many decimals as the ticks' step needs (0, 0.5, 1.0; 0, 2, 4)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class TimeTick:
    """A tick on the time axis: its time, its label and, where the date changes, the date."""

    at: datetime
    label: str
    context: str


def time_step(span_s: float, px_per_s: float, min_px: float) -> int:
    """The smallest step of `TIME_STEPS` whose ticks lie at least `min_px` apart."""
    for step in TIME_STEPS:
        if step * px_per_s >= min_px:
            return step
    return TIME_STEPS[-1] * max(1, math.ceil(min_px / (TIME_STEPS[-1] * px_per_s)))


def time_ticks(start: datetime, end: datetime, step: int) -> list[TimeTick]:
    """Ticks every `step` seconds (aligned to UTC midnight) strictly inside (start, end)."""
    first = math.floor(start.timestamp() / step) * step + step
    ticks, previous = [], time_context(start, step)
    t = float(first)
    while t < end.timestamp():
        at = datetime.fromtimestamp(t, UTC)
        context = time_context(at, step)
        ticks.append(TimeTick(at, time_label(at, step), context if context != previous else ""))
        previous = context
        t += step
    return ticks


def time_label(at: datetime, step: int) -> str:
    """A time as a tick reads it at this step: 19:32:05, 19:30 or 06 Dec."""
    if step < _MINUTE:
        return at.strftime("%H:%M:%S")
    return at.strftime("%H:%M") if step < _DAY else at.strftime("%d %b")


def time_context(at: datetime, step: int) -> str:
    """What a label leaves out at this step: the date (below a day) or the year."""
    return at.strftime("%Y-%m-%d") if step < _DAY else at.strftime("%Y")
