"""Summary statistics the benchmarks report: medians, percentiles, ratios."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

SUMMED = ("errors", "requests", "degraded", "non_2xx")
"""Counts that `median_of` adds up over repetitions instead of taking their median."""


def median(values: Iterable[float]) -> float:
    """The median, as a float."""
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float, digits: int | None = 3) -> float | None:
    """The `q`-th percentile (numpy's linear interpolation), rounded; None without values."""
    if not len(values):
        return None
    value = float(np.percentile(values, q))
    return value if digits is None else round(value, digits)


def p50_p99(values: Sequence[float], digits: int | None = 3) -> dict[str, float | None]:
    """The median and the 99th percentile."""
    return {"p50": percentile(values, 50, digits), "p99": percentile(values, 99, digits)}


def ratio(numerator: float, denominator: float) -> float | None:
    """`numerator / denominator`; None when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


def median_of(repeats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise median over repetitions of the numeric figures (counts: summed)."""
    out: dict[str, Any] = {}
    for key, value in repeats[0].items():
        values = [r.get(key) for r in repeats]
        if isinstance(value, dict):
            out[key] = median_of([v for v in values if isinstance(v, dict)])
        elif key in SUMMED:
            out[key] = sum(int(v) for v in values if v is not None)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers = [float(v) for v in values if isinstance(v, int | float)]
            out[key] = round(statistics.median(numbers), 3) if numbers else None
        else:
            out[key] = value
    return out
