"""The budget chart's scales: time to x (with dodged bars), epsilon to y (linear or broken)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from audit.ui.chart_ticks import nice_ticks

BREAK_RATIO = 3.0  # the axis breaks when the cap exceeds this many times what is spent
LOWER_SHARE = 1.5  # caps up to this many times the spent values stay on the lower axis
BAND_H, BREAK_GAP = 46.0, 14.0  # the upper (cap) band's height and the gap that marks the break
CROWD_SHARE = 0.25  # the share of the axis a burst of runs at one moment may spread over
BAND_LABEL_ROOM = 17.0  # room above the band's highest cap for a change label


@dataclass(frozen=True)
class TimeScale:
    """Times from `start` to `end` onto x from `lo` to `hi`."""

    start: datetime
    end: datetime
    lo: float
    hi: float

    def x(self, at: datetime) -> float:
        """The x of a time (clamped to the axis)."""
        span = (self.end - self.start).total_seconds()
        frac = (at - self.start).total_seconds() / span if span > 0 else 0.0
        return self.lo + (self.hi - self.lo) * min(max(frac, 0.0), 1.0)

    @property
    def px_per_s(self) -> float:
        """Pixels per second of the axis."""
        return (self.hi - self.lo) / max((self.end - self.start).total_seconds(), 1e-9)


def bar_width(count: int, span: float, widest: float) -> tuple[float, float]:
    """The width of `count` bars and the gap between them, at most `widest`.

    Bars are thin enough that a burst of runs at one moment, dodged side by side, takes
    about `CROWD_SHARE` of the axis' `span` at most (a large burst: down to 1.5 px bars).
    """
    width = min(widest, max(1.5, CROWD_SHARE * span / max(count, 1)))
    return width, 1.0 if width >= 4 else 0.5


def dodge(ideal: Sequence[float], width: float, gap: float, lo: float, hi: float) -> list[float]:
    """Bar centres near `ideal` (ascending) that keep `gap` between bars inside (lo, hi)."""
    centres: list[float] = []
    for x in ideal:
        floor = centres[-1] + width + gap if centres else lo + width / 2
        centres.append(max(x, floor))
    ceiling = hi - width / 2
    for i in reversed(range(len(centres))):
        centres[i] = min(centres[i], ceiling)
        ceiling = centres[i] - width - gap
    return [max(x, lo + width / 2) for x in centres]  # too many to fit: they overlap


@dataclass(frozen=True)
class EpsilonScale:
    """Epsilon onto y: a linear axis from 0 with round ticks, and maybe a cap band.

    When the axis is broken, the caps above the ticks sit in a band above the break, on a
    log scale of their own (not to the lower scale).
    """

    ticks: list[float]
    bottom: float
    tick_top: float
    band: tuple[float, float, float, float] | None = None  # low cap, high cap, their ys

    @property
    def broken(self) -> bool:
        """Whether the caps sit in a band above a break."""
        return self.band is not None

    def y(self, value: float) -> float:
        """The y of an epsilon value."""
        if self.band is None or value <= self.ticks[-1]:
            return self.bottom - (self.bottom - self.tick_top) * value / self.ticks[-1]
        low, high, y_low, y_high = self.band
        if high <= low:
            return (y_low + y_high) / 2
        frac = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
        return y_low - (y_low - y_high) * min(max(frac, 0.0), 1.0)


def epsilon_scale(
    data_top: float, caps: Sequence[float], top: float, bottom: float
) -> EpsilonScale:
    """A linear axis when the caps and the spent values are of similar size, else a broken one.

    `data_top` is the highest spent value; the plot spans y from `top` to `bottom`.
    """
    highest_cap = max(caps)
    if data_top <= 0 or highest_cap <= BREAK_RATIO * data_top:
        return EpsilonScale(nice_ticks(max(highest_cap, data_top, 1e-9)), bottom, top)
    lower = [data_top, *(c for c in caps if c <= LOWER_SHARE * data_top)]
    ticks = nice_ticks(max(lower))
    upper = [c for c in caps if c > ticks[-1]]
    band_bottom = top + BAND_H
    band = (min(upper), max(upper), band_bottom - 6, top + BAND_LABEL_ROOM)
    return EpsilonScale(ticks, bottom, band_bottom + BREAK_GAP, band)
