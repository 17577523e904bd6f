"""What a region's releases and experiments signal to its operators (the /metrics gauges).

Read from the region's ledger, where every release and experiment decision is recorded
(`atlasrec.releases`, `atlasrec.experiments`), one query per action:

- a **standing rollback**: the tenant's newest release decision rolled a version back (by a
  gate, the analysis, serving or a person), and no release has started since;
- a **release in flight**, and for how long: started, and neither promoted nor rolled back
  since (a canary that cannot gather its `min_requests` stays in flight);
- a **standing invalid experiment**: the tenant's newest experiment ended invalid (its sample
  ratio check failed: assignment or logging is broken), and none was created since.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from atlasrec.clock import utcnow
from atlasrec.dataplane.tables import AuditRecord
from atlasrec.experiments import CREATED, DECIDED, Status
from atlasrec.platform import Platform
from atlasrec.releases import PROMOTED, ROLLED_BACK, STARTED
from atlasrec.tenancy import Region


@dataclass(frozen=True)
class ReleaseSignal:
    """One tenant's release signals."""

    rolled_back: bool
    """Its newest release decision was a rollback, and nothing started since."""
    in_flight_s: float | None
    """Seconds since its release in flight started (None: none in flight)."""


def release_signals(platform: Platform, region: Region) -> dict[str, ReleaseSignal]:
    """Each tenant of `region` with a release record: its standing rollback and release age."""
    ledger = platform.plane(region).ledger
    started = ledger.latest_by_tenant(STARTED)
    promoted = ledger.latest_by_tenant(PROMOTED)
    rolled = ledger.latest_by_tenant(ROLLED_BACK)
    now = utcnow()
    signals = {}
    for tenant in {*started, *promoted, *rolled}:
        start, ended = _seq(started, tenant), max(_seq(promoted, tenant), _seq(rolled, tenant))
        signals[tenant] = ReleaseSignal(
            rolled_back=_seq(rolled, tenant) > max(start, _seq(promoted, tenant)),
            in_flight_s=_age(started[tenant], now) if start > ended else None,
        )
    return signals


def invalid_experiments(platform: Platform, region: Region) -> dict[str, bool]:
    """Each tenant of `region` with an ended experiment: whether its newest one is invalid.

    Invalid stands until the tenant's next experiment is created.
    """
    ledger = platform.plane(region).ledger
    created = ledger.latest_by_tenant(CREATED)
    decided = ledger.latest_by_tenant(DECIDED)
    return {
        tenant: record.seq > _seq(created, tenant)
        and json.loads(record.details).get("state") == Status.INVALID
        for tenant, record in decided.items()
    }


def _seq(records: dict[str, AuditRecord], tenant: str) -> int:
    record = records.get(tenant)
    return -1 if record is None else record.seq


def _age(record: AuditRecord, now: datetime) -> float:
    return max(0.0, (now - datetime.fromisoformat(record.ts)).total_seconds())
