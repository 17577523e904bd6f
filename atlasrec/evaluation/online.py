"""Online metrics of served recommendations from the outcomes that responded to them.

An outcome (an event naming a served request's id) is attributed to the item it names at
its position in that request's list: where the event gives a position, the item there must
be the event's item (otherwise it is not attributed); without one, the item's first position
in the list is used. Per day and model version (the arm that served it):

- `impressions`: items shown, `min(len(items), k)` per request;
- `ctr_at_k`: distinct clicked positions below `k` over impressions (an add to cart or a
  purchase implies a click: `atlasrec.event_types.CLICKS`);
- `conversions_per_request`: distinct purchased positions of the list per request;
- `coverage`: distinct items shown over the catalog's size;
- `novelty`: mean self-information `-log2 p(item)` of the items shown, `p` the item's share
  of the tenant's interactions (add-one smoothed over the catalog);
- `latency_ms`: p50, p95 and p99 of the requests' total serving time;
- `degraded_share`: the share of requests answered with a degraded stage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from atlasrec.event_types import CLICKS, CONVERSIONS

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class ServedList:
    """One served request: when (its UTC day), by which model, what, how fast."""

    request_id: str
    day: str
    model_version: str | None
    items: tuple[str, ...]
    latency_ms: float
    degraded: bool


@dataclass(frozen=True)
class Outcome:
    """An event that responds to a served request."""

    request_id: str
    item_id: str
    position: int | None
    event: str


@dataclass
class ArmDay:
    """One day's online metrics of one model version (arm) of a tenant."""

    day: str
    model_version: str
    k: int
    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    unattributed: int = 0
    """Outcomes naming a request served this day whose item is not where they say."""
    ctr_at_k: float = 0.0
    conversions_per_request: float = 0.0
    coverage: float = 0.0
    novelty: float = 0.0
    degraded_share: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)


def attributed_position(items: Sequence[str], outcome: Outcome) -> int | None:
    """The outcome's position in the served list `items`, or None if its item is not there."""
    if outcome.position is not None:
        at = outcome.position
        return at if at < len(items) and items[at] == outcome.item_id else None
    try:
        return list(items).index(outcome.item_id)
    except ValueError:
        return None


def online_metrics(
    served: Sequence[ServedList],
    outcomes: Iterable[Outcome],
    *,
    k: int,
    catalog_size: int,
    popularity: Mapping[str, int],
) -> list[ArmDay]:
    """Per (day, model version), the metrics of the module docstring; sorted by both."""
    by_id = {s.request_id: s for s in served}
    clicked: dict[str, set[int]] = defaultdict(set)
    bought: dict[str, set[int]] = defaultdict(set)
    misses: dict[tuple[str, str], int] = defaultdict(int)
    for outcome in outcomes:
        request = by_id.get(outcome.request_id)
        if request is None:
            continue
        position = attributed_position(request.items, outcome)
        if position is None:
            misses[_arm(request)] += 1
            continue
        if outcome.event in CLICKS and position < k:
            clicked[request.request_id].add(position)
        if outcome.event in CONVERSIONS:
            bought[request.request_id].add(position)
    groups: dict[tuple[str, str], list[ServedList]] = defaultdict(list)
    for s in served:
        groups[_arm(s)].append(s)
    total = sum(popularity.values()) + max(catalog_size, 1)
    return [
        _arm_day(
            day,
            version,
            requests,
            k=k,
            clicked=clicked,
            bought=bought,
            misses=misses[(day, version)],
            catalog_size=catalog_size,
            information=lambda item: -float(np.log2((popularity.get(item, 0) + 1) / total)),
        )
        for (day, version), requests in sorted(groups.items())
    ]


def _arm(served: ServedList) -> tuple[str, str]:
    return served.day, served.model_version or "none"


def _arm_day(
    day: str,
    version: str,
    requests: list[ServedList],
    *,
    k: int,
    clicked: Mapping[str, set[int]],
    bought: Mapping[str, set[int]],
    misses: int,
    catalog_size: int,
    information: Callable[[str], float],
) -> ArmDay:
    shown = [item for r in requests for item in r.items[:k]]
    self_info = [information(item) for item in shown]
    latencies = np.array([r.latency_ms for r in requests], dtype=np.float64)
    row = ArmDay(day=day, model_version=version, k=k, requests=len(requests))
    row.impressions = len(shown)
    row.clicks = sum(len(clicked.get(r.request_id, ())) for r in requests)
    row.conversions = sum(len(bought.get(r.request_id, ())) for r in requests)
    row.unattributed = misses
    row.ctr_at_k = row.clicks / row.impressions if row.impressions else 0.0
    row.conversions_per_request = row.conversions / row.requests
    row.coverage = len(set(shown)) / catalog_size if catalog_size else 0.0
    row.novelty = float(np.mean(self_info)) if self_info else 0.0
    row.degraded_share = sum(r.degraded for r in requests) / row.requests
    quantiles = np.percentile(latencies, PERCENTILES)
    row.latency_ms = {f"p{q}": float(v) for q, v in zip(PERCENTILES, quantiles, strict=True)}
    return row
