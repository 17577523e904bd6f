"""The online metrics job: outcomes tied to served requests, per tenant, day and model version.

Inside the tenant's region, it reads the requests served over the last `days` UTC days
(the region database's `served_requests`) and the events that responded to them (the
offline store's rows with a `request_id`, from the first of those days on), computes
`atlasrec.evaluation.online.online_metrics` and replaces those days' rows of
`online_metrics` in one transaction. Re-running it is harmless: late events are counted on
the next run. It runs per region under Celery beat (the region's watch, `atlasrec.jobs`)
and in-process with `atlasrec monitor outcomes`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from sqlalchemy import delete, func
from sqlmodel import col, select

from atlasrec.clock import utcnow
from atlasrec.dataplane.tables import Item, OnlineMetric, ServedRequest
from atlasrec.errors import InvalidInputError
from atlasrec.evaluation.online import (
    ArmDay,
    Outcome,
    ServedList,
    attributed_position,
    online_metrics,
)
from atlasrec.event_types import CLICKS, CONVERSIONS
from atlasrec.offline_store import TenantOffline
from atlasrec.platform import Plane, Platform
from atlasrec.tenancy import Region, Scope

DEFAULT_DAYS = 2
"""Today and yesterday: a click on yesterday evening's recommendation still counts."""
MAX_DAYS = 90
DEFAULT_K = 10
METRICS = ("ctr", "conversion")
"""The primary online metrics of rollouts and experiments (`user_values`)."""


def refresh_outcomes(
    platform: Platform, tenant_id: str, *, actor: str, days: int = DEFAULT_DAYS, k: int = DEFAULT_K
) -> list[ArmDay]:
    """Recompute and store the tenant's online metrics of the last `days` days."""
    if not 1 <= days <= MAX_DAYS or not 1 <= k <= 100:
        raise InvalidInputError(
            f"tenant {tenant_id!r}: days must be 1 to {MAX_DAYS} and k 1 to 100 "
            f"(given days={days}, k={k})"
        )
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    first = (utcnow().date() - timedelta(days=days - 1)).isoformat()
    with plane.session(scope, actor=actor, action="outcomes.read") as session:
        served = _served(session.execute(_served_since(scope, first)).scalars().all())
        catalog = int(session.execute(select(func.count()).select_from(Item)).scalar_one())
    offline = plane.offline.scoped(scope, actor=actor)
    rows = online_metrics(
        served,
        read_outcomes(offline, first),
        k=k,
        catalog_size=catalog,
        popularity=_popularity(offline),
    )
    _store(platform, scope, first, rows, actor=actor)
    return rows


def refresh_region_outcomes(platform: Platform, region: Region, *, actor: str) -> dict[str, int]:
    """`refresh_outcomes` of every tenant homed in `region`: rows stored per tenant."""
    return {
        t.id: len(refresh_outcomes(platform, t.id, actor=actor))
        for t in platform.control.list_tenants(region)
    }


def stored_outcomes(
    platform: Platform, tenant_id: str, *, actor: str, days: int = DEFAULT_DAYS
) -> list[dict[str, Any]]:
    """The tenant's stored online metrics of the last `days` days, oldest first."""
    scope = platform.scope(tenant_id)
    first = (utcnow().date() - timedelta(days=days - 1)).isoformat()
    query = (
        select(OnlineMetric)
        .where(col(OnlineMetric.tenant_id) == tenant_id, col(OnlineMetric.day) >= first)
        .order_by(col(OnlineMetric.day), col(OnlineMetric.model_version))
    )
    with platform.plane(scope.region).session(scope, actor=actor, action="outcomes.read") as s:
        rows = s.execute(query).scalars().all()
    return [{**r.figures, "computed_at": r.computed_at.isoformat()} for r in rows]


def _served_since(scope: Scope, first: str) -> Any:
    since = datetime.fromisoformat(first).replace(tzinfo=UTC)
    return select(ServedRequest).where(
        col(ServedRequest.tenant_id) == scope.tenant_id, col(ServedRequest.served_at) >= since
    )


def _served(rows: Sequence[ServedRequest]) -> list[ServedList]:
    return [
        ServedList(
            request_id=r.request_id,
            day=_day(r.served_at),
            model_version=r.model_version,
            items=tuple(r.items),
            latency_ms=float(r.timings_ms.get("total", 0.0)),
            degraded=bool(r.degraded),
        )
        for r in rows
    ]


def _day(at: datetime) -> str:
    """The UTC day of a stored timestamp (naive timestamps are UTC)."""
    return (at if at.tzinfo is None else at.astimezone(UTC)).date().isoformat()


def read_outcomes(offline: TenantOffline, first: str) -> list[Outcome]:
    """The events that name a served request, from partitions of `first` on."""
    files = [f for f in offline.files() if f.parent.name >= f"date={first}"]
    table = offline.read_table(
        ["request_id", "item_id", "position", "event"],
        files=files,
        where=ds.field("request_id").is_valid(),
    )
    columns = [table[c].to_pylist() for c in ("request_id", "item_id", "position", "event")]
    return [Outcome(str(r), str(i), p, str(e)) for r, i, p, e in zip(*columns, strict=True)]


def _popularity(offline: TenantOffline) -> dict[str, int]:
    """Interactions per item in the tenant's offline store (novelty's reference)."""
    items = offline.read_table(["item_id"])["item_id"]
    if not len(items):
        return {}
    counts = pc.value_counts(pc.cast(items, pa.string()))
    return dict(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    )


def _store(platform: Platform, scope: Scope, first: str, rows: list[ArmDay], *, actor: str) -> None:
    """Replace the stored rows of the days from `first` on, in one transaction."""
    plane = platform.plane(scope.region)
    with plane.session(scope, actor=actor, action="outcomes.write") as session:
        session.execute(
            delete(OnlineMetric).where(
                col(OnlineMetric.tenant_id) == scope.tenant_id, col(OnlineMetric.day) >= first
            )
        )
        session.add_all(
            OnlineMetric(
                tenant_id=scope.tenant_id,
                day=r.day,
                model_version=r.model_version,
                k=r.k,
                figures=asdict(r),
            )
            for r in rows
        )


@dataclass(frozen=True)
class Responses:
    """What users did with a set of served requests: clicked positions and purchases."""

    clicked: dict[str, set[int]]
    """Request id -> the positions clicked."""
    bought: set[str]
    """Request ids followed by a purchase."""


def responses(
    plane: Plane, scope: Scope, rows: Sequence[ServedRequest], *, actor: str
) -> Responses:
    """The outcomes that responded to `rows`, attributed by `attributed_position`."""
    by_id = {r.request_id: r for r in rows}
    found = Responses(defaultdict(set), set())
    first = min((r.served_at for r in rows), default=None)
    if first is None:
        return found
    for outcome in _outcomes_since(plane, scope, first.date().isoformat(), actor=actor):
        request = by_id.get(outcome.request_id)
        position = None if request is None else attributed_position(request.items, outcome)
        if position is None:
            continue
        if outcome.event in CLICKS:
            found.clicked[outcome.request_id].add(position)
        if outcome.event in CONVERSIONS:
            found.bought.add(outcome.request_id)
    return found


def _outcomes_since(plane: Plane, scope: Scope, first_day: str, *, actor: str) -> list[Outcome]:
    return read_outcomes(plane.offline.scoped(scope, actor=actor), first_day)


def user_values(
    plane: Plane, scope: Scope, rows: Sequence[ServedRequest], metric: str, *, actor: str
) -> dict[str, float]:
    """Per user: the share of shown items clicked (`ctr`) or of requests bought from.

    The unit of experiments and rollouts that assign users to arms (one value per user).
    """
    return per_user(rows, responses(plane, scope, rows, actor=actor), metric)


def per_user(rows: Sequence[ServedRequest], found: Responses, metric: str) -> dict[str, float]:
    """`user_values` of `rows` from outcomes already read (`responses` of them or more)."""
    shown: dict[str, int] = defaultdict(int)
    hits: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.user_key is None:
            continue
        if metric == "ctr":
            shown[r.user_key] += len(r.items)
            hits[r.user_key] += len(found.clicked.get(r.request_id, ()))
        else:
            shown[r.user_key] += 1
            hits[r.user_key] += r.request_id in found.bought
    return {u: hits[u] / shown[u] if shown[u] else 0.0 for u in shown}
