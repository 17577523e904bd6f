"""The suite's figures: per phase, what the client saw; at the end, acknowledged writes lost."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from benchmarks.chaos.cluster import REGION, TENANT, Region, region_sql
from benchmarks.chaos.traffic import Outcome, Tally
from benchmarks.stats import p50_p99


def summary(tally: Tally) -> dict[str, Any]:
    """Per phase: requests, 5xx, unanswered, failovers, statuses by kind, degraded share."""
    phases: dict[str, list[Outcome]] = {}
    for outcome in tally.outcomes:
        phases.setdefault(outcome.phase, []).append(outcome)
    return {phase: _phase(outcomes) for phase, outcomes in phases.items()}


def _phase(outcomes: list[Outcome]) -> dict[str, Any]:
    recs = [o for o in outcomes if o.kind == "recommendations"]
    by_kind = {
        kind: dict(sorted(Counter(str(o.status) for o in outcomes if o.kind == kind).items()))
        for kind in sorted({o.kind for o in outcomes})
    }
    return {
        "requests": len(outcomes),
        "5xx": sum(500 <= o.status < 600 for o in outcomes),
        "unanswered": sum(o.status == 0 for o in outcomes),
        "failovers": sum(o.failover for o in outcomes),
        "statuses": by_kind,
        "degraded_share": round(sum(o.degraded for o in recs) / len(recs), 3) if recs else None,
        "recommendation_latency_ms": p50_p99([o.latency_ms for o in recs if o.status == 200]),
    }


def lost_writes(region: Region, tally: Tally) -> dict[str, Any]:
    """Acknowledged writes not found where they land, by kind and by the phase they were sent."""
    stored = {
        "events": _offline_event_ids(region),
        "recommendations": _column(region, "SELECT request_id FROM served_requests"),
        "catalog": _column(region, "SELECT item_id FROM items WHERE tenant_id = %s", TENANT),
    }
    lost: dict[str, Any] = {}
    for kind, acked in tally.acked.items():
        missing = [phase for ident, phase in acked.items() if ident not in stored[kind]]
        lost[kind] = {
            "acknowledged": len(acked),
            "lost": len(missing),
            "lost_by_phase": dict(Counter(missing)),
        }
    return lost


def _column(region: Region, query: str, *args: Any) -> set[str]:
    return {str(row[0]) for row in region_sql(region, query, *args)}


def _offline_event_ids(region: Region) -> set[str]:
    """Every event id in the tenant's offline store (its Parquet files, read directly)."""
    root = Path(region.home) / "offline" / REGION / "events" / f"tenant={TENANT}"
    files = [str(f) for f in root.rglob("*.parquet") if not f.name.startswith("ingest")]
    if not files:
        return set()
    table = ds.dataset(files, format="parquet").to_table(columns=["event_id"])
    return {str(v) for v in table["event_id"].to_pylist()}
