"""What needs a privacy officer's attention, per tenant: the alerts inbox of the audit UI.

Each alert is read from what the platform already records (a few indexed queries per tenant,
never a scan of the ledger):

- `budget`: the composed epsilon spent reached `BUDGET_WARNING_SHARE` of the cap (warning)
  or the cap (critical), as `privacy.budget.BudgetState` defines spent and exhausted;
- `refusal_spike`: the refused attempts concerning the tenant in the last hour (see
  `is_refusal_spike`);
- `leakage`: leakage findings concerning the tenant (in its artifacts, or of its canaries)
  recorded since the region's federation was last resumed (critical: resuming is how an
  officer closes a leak);
- `drift`: the last drift check of the tenant's live model found drift (warning);
- `privacy_audit`: a release whose empirical audit's lower bound is above its claimed
  epsilon (critical);
- `raise_request`: a request to raise the tenant's cap waits for a second officer (warning).

Messages never name another tenant: a refusal or a finding that involved one is counted,
not attributed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from sqlmodel import Session, col, or_, select

from atlasrec.boundary import REFUSED as BOUNDARY_REFUSED
from atlasrec.control.cap_requests import CapRequests
from atlasrec.control.tables import CapRaiseRequest, Tenant
from atlasrec.dataplane.audit_tenants import record_tenants
from atlasrec.dataplane.dp_runs import DpRunTable, spent_by_tenant
from atlasrec.dataplane.tables import AuditRecord, DpRun
from atlasrec.drift import CHECKED as DRIFT_CHECKED
from atlasrec.leakage import FEDERATION_RESUMED, FEDERATION_STOPPED, HIT
from atlasrec.models.bundle import KIND as MODEL_KIND
from atlasrec.platform import Platform
from atlasrec.privacy_audit import AUDITED
from atlasrec.tenancy import Region, Scope
from audit.access import REFUSED as ACCESS_REFUSED
from audit.caps import CAP_CHANGED
from audit.ledger import AuditLedger
from audit.lineage import details_of, iso
from privacy.budget import TOLERANCE, BudgetState

Severity = Literal["warning", "critical"]
WARNING: Severity = "warning"
CRITICAL: Severity = "critical"

BUDGET, REFUSAL_SPIKE, LEAKAGE, DRIFT, PRIVACY_AUDIT, RAISE_REQUEST = (
    "budget",
    "refusal_spike",
    "leakage",
    "drift",
    "privacy_audit",
    "raise_request",
)
ACTOR = "audit:alerts"

BUDGET_WARNING_SHARE = 0.8
"""A budget alert is raised when the composed epsilon spent reaches this share of the cap."""
SPIKE_MIN_ATTEMPTS = 10
"""A refusal spike needs at least this many refused attempts in the last hour..."""
SPIKE_FACTOR = 5.0
"""...and at least this many times the hourly mean of the `BASELINE_HOURS` before it."""
SPIKE_WINDOW = timedelta(hours=1)
BASELINE_HOURS = 24
DRIFT_LOOKBACK = 24
"""How many of the tenant's newest drift checks are read to date a run of drifted checks."""
REFUSALS = (BOUNDARY_REFUSED, ACCESS_REFUSED)


@dataclass(frozen=True)
class Alert:
    """One thing about one tenant that needs an officer's attention."""

    tenant_id: str
    kind: str
    severity: Severity
    message: str
    """One line, with the numbers."""
    since: str | None
    """When the condition began (ISO 8601, UTC, seconds), if known."""
    evidence: str
    """The audit UI page that shows what the alert is about."""


@dataclass(frozen=True)
class _RegionState:
    """What every tenant's alerts of one region share: the clock and region-wide records."""

    region: Region
    now: datetime
    baseline_from: int
    """The first ledger seq of the refusal baseline (`BASELINE_HOURS` before the window)."""
    resumed_seq: int
    """The region's last `federation.resumed` (0: never); older findings are resolved."""
    federation_stopped: bool


@dataclass
class _Evidence:
    """What one tenant's alerts are read from (gathered per tenant, or for a whole region)."""

    spent: float = 0.0
    refusals: list[AuditRecord] = field(default_factory=list)
    """Refusals concerning the tenant, from the start of the baseline on."""
    hits: list[AuditRecord] = field(default_factory=list)
    """Leakage findings concerning the tenant since the region's federation was resumed."""
    drift: AuditRecord | None = None
    """The tenant's newest drift check."""
    audits: list[AuditRecord] = field(default_factory=list)
    raise_request: CapRaiseRequest | None = None
    """The tenant's request to raise its cap that waits for a decision."""


def tenant_alerts(
    platform: Platform, tenant: Tenant, *, now: datetime | None = None
) -> list[Alert]:
    """The alerts of `tenant` (in its home region), most urgent first."""
    state = _region_state(platform, Region(tenant.home_region), now)
    return ordered(
        _alerts_of(platform, tenant, _tenant_evidence(platform, tenant.id, state), state)
    )


def region_alerts(
    platform: Platform, region: Region, tenants: Iterable[Tenant], *, now: datetime | None = None
) -> list[Alert]:
    """The alerts of `tenants` homed in `region` (others are skipped), most urgent first.

    The same alerts as `tenant_alerts` of each, read with a few queries of the whole region.
    """
    homed = [t for t in tenants if t.home_region == region.value]
    state = _region_state(platform, region, now)
    evidence = _region_evidence(platform, [t.id for t in homed], state)
    return ordered(a for t in homed for a in _alerts_of(platform, t, evidence[t.id], state))


def ordered(alerts: Iterable[Alert]) -> list[Alert]:
    """Critical first, then the newest first (undated last), then by tenant and kind."""
    result = sorted(alerts, key=lambda a: (a.tenant_id, a.kind, a.message))
    result.sort(key=lambda a: a.since or "", reverse=True)
    result.sort(key=lambda a: a.severity != CRITICAL)
    return result


def is_refusal_spike(last_hour: int, baseline_per_hour: float) -> bool:
    """The refusal-spike rule: whether the last hour's refused attempts are a spike.

    A spike is at least `SPIKE_MIN_ATTEMPTS` attempts in the last hour (a few retries are
    noise) and at least `SPIKE_FACTOR` times the hourly mean of the `BASELINE_HOURS` before
    it (a tenant that is always refused this often has a known, steady problem).
    """
    return last_hour >= max(SPIKE_MIN_ATTEMPTS, SPIKE_FACTOR * baseline_per_hour)


def _region_state(platform: Platform, region: Region, now: datetime | None) -> _RegionState:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    ledger = platform.plane(region).ledger
    start = now - SPIKE_WINDOW - timedelta(hours=BASELINE_HOURS)
    resumed = ledger.newest(FEDERATION_RESUMED, limit=1)
    stopped = ledger.newest(FEDERATION_STOPPED, limit=1)
    resumed_seq = resumed[0].seq if resumed else 0
    return _RegionState(
        region,
        now,
        ledger.first_seq_at(start.isoformat(timespec="microseconds")),
        resumed_seq,
        bool(stopped) and stopped[0].seq > resumed_seq,
    )


def _tenant_evidence(platform: Platform, tenant_id: str, state: _RegionState) -> _Evidence:
    plane = platform.plane(state.region)
    ledger = plane.ledger
    scope = Scope(tenant_id, state.region)
    with plane.session(scope, actor=ACTOR, action="audit.alerts") as session:
        spent = DpRunTable(session, ledger).spent()
    drift = ledger.newest(DRIFT_CHECKED, tenant_id=tenant_id, limit=1)
    return _Evidence(
        spent,
        ledger.concerning(tenant_id, REFUSALS, from_seq=state.baseline_from),
        _hits(ledger, tenant_id, state.resumed_seq + 1),
        drift[0] if drift else None,
        ledger.records(tenant_id=tenant_id, action=AUDITED, limit=None),
        CapRequests(platform.control.engine).pending([tenant_id]).get(tenant_id),
    )


def _region_evidence(
    platform: Platform, tenant_ids: list[str], state: _RegionState
) -> dict[str, _Evidence]:
    plane = platform.plane(state.region)
    evidence = {t: _Evidence() for t in tenant_ids}
    with Session(plane.engine) as session:
        for tenant_id, spent in spent_by_tenant(session, tenant_ids).items():
            evidence[tenant_id].spent = spent
    for record in _since(plane.ledger, REFUSALS, state.baseline_from):
        for tenant_id in record_tenants(record) & evidence.keys():
            evidence[tenant_id].refusals.append(record)
    for record in _since(plane.ledger, (HIT,), state.resumed_seq + 1):
        for concerned in {record.tenant_id, details_of(record).get("owner")} & evidence.keys():
            evidence[str(concerned)].hits.append(record)
    for tenant_id, record in plane.ledger.latest_by_tenant(DRIFT_CHECKED).items():
        if tenant_id in evidence:
            evidence[tenant_id].drift = record
    for record in _since(plane.ledger, (AUDITED,), 0):
        if record.tenant_id in evidence:
            evidence[record.tenant_id].audits.append(record)
    for tenant_id, request in CapRequests(platform.control.engine).pending(tenant_ids).items():
        evidence[tenant_id].raise_request = request
    return evidence


def _alerts_of(
    platform: Platform, tenant: Tenant, evidence: _Evidence, state: _RegionState
) -> list[Alert]:
    found = [
        _budget_alert(platform, tenant, evidence.spent, state.region),
        _refusal_alert(tenant.id, evidence.refusals, state),
        _leakage_alert(tenant.id, evidence.hits, state),
        _drift_alert(platform, tenant.id, evidence.drift, state.region),
        _raise_alert(evidence.raise_request),
    ]
    return [a for a in found if a is not None] + _audit_alerts(tenant.id, evidence.audits)


def _budget_alert(platform: Platform, tenant: Tenant, spent: float, region: Region) -> Alert | None:
    budget = BudgetState(tenant.epsilon_cap, spent, tenant.delta)
    level = BUDGET_WARNING_SHARE * budget.cap
    if budget.spent < level - TOLERANCE:
        return None
    plane = platform.plane(region)
    with plane.session(Scope(tenant.id, region), actor=ACTOR, action="audit.alerts") as session:
        runs = DpRunTable(session, plane.ledger).runs()
    changed = plane.ledger.newest(CAP_CHANGED, tenant_id=tenant.id, limit=1)
    crossed, cap_set = _crossed_at(runs, level), changed[0].ts if changed else None
    since = max(filter(None, (_stamp(crossed), _stamp(cap_set))), default=None)
    return Alert(
        tenant.id,
        BUDGET,
        CRITICAL if budget.exhausted else WARNING,
        _budget_message(budget),
        since,
        f"/audit/tenants/{quote(tenant.id)}",
    )


def _raise_alert(request: CapRaiseRequest | None) -> Alert | None:
    """A raise of the cap waiting for a second officer (named: it is the tenant's own)."""
    if request is None:
        return None
    return Alert(
        request.tenant_id,
        RAISE_REQUEST,
        WARNING,
        f"raise of the cap {request.cap_then:g} -> {request.requested_cap:g} requested by "
        f"{request.requested_by}: waits for a platform officer of the region other than them",
        _stamp(iso(request.requested_at)),
        f"/audit/tenants/{quote(request.tenant_id)}",
    )


def _budget_message(budget: BudgetState) -> str:
    head = (
        "budget exhausted (DP training and federation stopped)"
        if budget.exhausted
        else "budget nearly spent"
    )
    return (
        f"{head}: composed total ε {budget.spent:.3f} of cap {budget.cap:g} "
        f"({100 * budget.spent / budget.cap:.0f}%), {budget.remaining:.3f} left"
    )


def _crossed_at(runs: Sequence[DpRun], level: float) -> str | None:
    """When the first run took the composed total to `level`."""
    run = next((r for r in runs if r.epsilon_total >= level - TOLERANCE), None)
    return None if run is None else iso(run.created_at)


def _refusal_alert(
    tenant_id: str, refusals: list[AuditRecord], state: _RegionState
) -> Alert | None:
    window_start = (state.now - SPIKE_WINDOW).isoformat(timespec="microseconds")
    end = state.now.isoformat(timespec="microseconds")
    recent: list[AuditRecord] = []
    earlier = 0
    for record in refusals:
        if tenant_id not in record_tenants(record) or record.ts > end:
            continue
        if record.ts >= window_start:
            recent.append(record)
        else:
            earlier += _attempts(record)
    last_hour = sum(_attempts(r) for r in recent)
    baseline = earlier / BASELINE_HOURS
    if not is_refusal_spike(last_hour, baseline):
        return None
    boundary = sum(_attempts(r) for r in recent if r.action == BOUNDARY_REFUSED)
    parts = [f"{boundary} at the boundary" if boundary else ""]
    parts.append(f"{last_hour - boundary} officer reads" if last_hour > boundary else "")
    return Alert(
        tenant_id,
        REFUSAL_SPIKE,
        WARNING,
        f"refusal spike: {last_hour} refused attempts in the last hour "
        f"({', '.join(p for p in parts if p)}) against a mean of {baseline:.1f} an hour over "
        f"the {BASELINE_HOURS} hours before",
        _stamp(recent[0].ts),
        f"/audit/tenants/{quote(tenant_id)}/residency",
    )


def _attempts(record: AuditRecord) -> int:
    """How many refused attempts a record stands for (aggregated repeats count each)."""
    repeats = details_of(record).get("repeats")
    return repeats if isinstance(repeats, int) and repeats > 0 else 1


def _leakage_alert(tenant_id: str, records: list[AuditRecord], state: _RegionState) -> Alert | None:
    read = ((r, details_of(r)) for r in records)
    hits = [(r, d) for r, d in read if tenant_id in (r.tenant_id, d.get("owner"))]
    if not hits:
        return None
    in_own = [d for r, d in hits if r.tenant_id == tenant_id]
    quarantined = {d.get("found_in") for d in in_own if _quarantined(d.get("found_in"))}
    parts = [
        f"{len(in_own)} finding(s) of other tenants' canaries in this tenant's artifacts or "
        f"outputs ({len(quarantined)} artifact(s) quarantined)"
        if in_own
        else "",
        f"{len(hits) - len(in_own)} finding(s) of this tenant's canaries elsewhere"
        if len(hits) > len(in_own)
        else "",
        "the region's federation is stopped" if state.federation_stopped else "",
    ]
    return Alert(
        tenant_id,
        LEAKAGE,
        CRITICAL,
        "unresolved leakage: " + "; ".join(p for p in parts if p),
        _stamp(hits[0][0].ts),
        f"/audit/log?tenant={quote(tenant_id)}&action=leakage.",
    )


def _quarantined(found_in: object) -> bool:
    """Whether the scanner quarantined what a finding was in (a model or a fallback copy)."""
    return isinstance(found_in, str) and found_in.startswith(("model:", "fallback:"))


def _drift_alert(
    platform: Platform, tenant_id: str, newest: AuditRecord | None, region: Region
) -> Alert | None:
    last = details_of(newest) if newest is not None else {}
    if not _drifted(last):
        return None
    plane = platform.plane(region)
    live = plane.artifacts.latest(Scope(tenant_id, region), MODEL_KIND, actor=ACTOR)
    version = last.get("model_version")
    if live is None or live.version != version:
        return None
    checks = plane.ledger.newest(DRIFT_CHECKED, tenant_id=tenant_id, limit=DRIFT_LOOKBACK)
    streak = _takewhile_drifted([details_of(r) for r in checks], version)
    return Alert(
        tenant_id,
        DRIFT,
        WARNING,
        f"drift of live model {version}: {', '.join(_drifted(last))} drifted in the last "
        f"check ({len(streak)} drifted check(s) in a row)",
        _stamp(streak[-1].get("checked_at")),
        f"/audit/tenants/{quote(tenant_id)}/drift",
    )


def _drifted(check: dict[str, Any]) -> list[str]:
    drifted = check.get("drifted")
    return [str(s) for s in drifted] if isinstance(drifted, list) else []


def _takewhile_drifted(checks: list[dict[str, Any]], version: object) -> list[dict[str, Any]]:
    streak = []
    for check in checks:
        if check.get("model_version") != version or not _drifted(check):
            break
        streak.append(check)
    return streak


def _audit_alerts(tenant_id: str, records: list[AuditRecord]) -> list[Alert]:
    """A critical alert per release whose latest empirical audit alarmed.

    The audits are read as `atlasrec.privacy_audit.release_audits` reads them (the latest per
    release), with the time of the audit.
    """
    latest: dict[str, tuple[AuditRecord, dict[str, Any]]] = {}
    for record in records:
        details = details_of(record)
        latest[str(details.get("model_version"))] = (record, details)
    return [
        Alert(
            tenant_id,
            PRIVACY_AUDIT,
            CRITICAL,
            f"empirical privacy audit of release {version}: lower bound ε "
            f"{float(audit.get('epsilon_lower_bound', 0)):.3f} is above the claimed ε "
            f"{float(audit.get('claimed_epsilon', 0)):.3f}",
            _stamp(record.ts),
            f"/audit/tenants/{quote(tenant_id)}",
        )
        for version, (record, audit) in latest.items()
        if audit.get("alarm") is True
    ]


def _hits(ledger: AuditLedger, tenant_id: str, from_seq: int) -> list[AuditRecord]:
    """Leakage findings from `from_seq` on, in the tenant's artifacts or of its canaries.

    A finding names its canary's owner in its details, which the tenant index leaves out.
    """
    named = f'"owner":{json.dumps(tenant_id)}'
    query = (
        select(AuditRecord)
        .where(
            col(AuditRecord.action) == HIT,
            col(AuditRecord.seq) >= from_seq,
            or_(
                col(AuditRecord.tenant_id) == tenant_id,
                col(AuditRecord.details).contains(named, autoescape=True),
            ),
        )
        .order_by(col(AuditRecord.seq))
    )
    with Session(ledger.engine, expire_on_commit=False) as session:
        return list(session.execute(query).scalars().all())


def _since(ledger: AuditLedger, actions: Sequence[str], from_seq: int) -> list[AuditRecord]:
    """The region's records of `actions` from `from_seq` on, in chain order."""
    query = (
        select(AuditRecord)
        .where(col(AuditRecord.action).in_(actions), col(AuditRecord.seq) >= from_seq)
        .order_by(col(AuditRecord.seq))
    )
    with Session(ledger.engine, expire_on_commit=False) as session:
        return list(session.execute(query).scalars().all())


def _stamp(value: str | None) -> str | None:
    """ISO 8601 text in UTC to the second (None stays None)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")
