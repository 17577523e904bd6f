"""A tenant's compliance report in its home region: budget, runs, artifacts, refusals.

The same data backs the audit UI's pages and the exports (JSON, CSV, printable HTML):
DP runs and federated rounds with the epsilon each charged, the cap and its history, what
remains, the artifacts with the tenant and region they are attributed to, the refused
crossing attempts, federation participation, and the state of the region's audit chain.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from atlasrec.artifacts import MANIFEST
from atlasrec.boundary import REFUSED as BOUNDARY_REFUSED
from atlasrec.control.cap_requests import CapRequests
from atlasrec.control.tables import Tenant
from atlasrec.dataplane.dp_runs import DpRunTable, budget_state
from atlasrec.dataplane.tables import AuditRecord, DpRun
from atlasrec.platform import Platform
from atlasrec.privacy_audit import release_audits
from atlasrec.tenancy import Region, Scope, SharingPolicy
from audit.access import REFUSED as ACCESS_REFUSED
from audit.caps import CAP_CHANGED
from audit.ledger import AuditLedger, Verification
from audit.ledger_answers import LedgerAnswer, all_refusals, refusal_ledgers
from audit.lineage import FEDERATION_ROUND, details_of, federation_round, iso
from privacy.epsilon_terms import RUN_TERMS, STANDALONE, run_epsilons

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
CSV_COLUMNS = (
    "record_type",
    "tenant_id",
    "region",
    "time",
    "id",
    "kind",
    "status",
    "epsilon_standalone",
    "epsilon_increment",
    "epsilon_total_after",
    "epsilon_cap",
    "epsilon_remaining",
    "detail",
)
OTHER_TENANT = "(another tenant)"
FEDERATION_EXPORTED = "federation.exported"
"""A region's global-tier share left it (`server.global_tier.EXPORTED`: a higher layer)."""


@dataclass(frozen=True)
class CapPoint:
    """The cap from a moment on."""

    ts: str
    cap: float


def _record(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "ts": record.ts,
        "actor": record.actor,
        "action": record.action,
        "tenant_id": record.tenant_id,
        "subject": record.subject,
        "details": details_of(record),
    }


def cap_history(records: list[AuditRecord], current: float) -> list[CapPoint]:
    """The cap over time from the tenant's creation and cap-change records."""
    points: list[CapPoint] = []
    for record in records:
        details = details_of(record)
        if record.action == "tenant.created" and "epsilon_cap" in details:
            points.append(CapPoint(record.ts, float(details["epsilon_cap"])))
        elif record.action == CAP_CHANGED and "new_cap" in details:
            if not points and "old_cap" in details:
                points.append(CapPoint("", float(details["old_cap"])))
            points.append(CapPoint(record.ts, float(details["new_cap"])))
    return points or [CapPoint("", current)]


def cap_at(history: list[CapPoint], ts: str) -> float:
    """The cap in force at time `ts` (ISO text)."""
    cap = history[0].cap
    for point in history:
        if point.ts <= ts:
            cap = point.cap
    return cap


def _artifacts(platform: Platform, scope: Scope, actor: str) -> list[dict[str, Any]]:
    """Every published artifact version of the tenant, with its manifest's attribution."""
    plane = platform.plane(scope.region)
    plane.boundary.admit(scope, actor=actor, action="artifact.read", subject="audit.report")
    root = plane.artifacts.root / scope.tenant_id
    rows: list[dict[str, Any]] = []
    if not root.is_dir():
        return rows
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)):
        latest_file = kind_dir / "LATEST"
        latest = latest_file.read_text().strip() if latest_file.exists() else None
        for version_dir in sorted(kind_dir.iterdir()):
            manifest_path = version_dir / MANIFEST
            if version_dir.name.startswith(".") or not manifest_path.is_file():
                continue
            manifest = json.loads(manifest_path.read_text())
            region = manifest.get("region")
            rows.append(
                {
                    "kind": kind_dir.name,
                    "version": version_dir.name,
                    "tenant_id": manifest.get("tenant_id"),
                    "region": region,
                    "stored_in": scope.region.value,
                    "in_home_region": region == scope.region.value,
                    "attributed": manifest.get("tenant_id") == scope.tenant_id
                    and region == scope.region.value,
                    "created_at": manifest.get("created_at"),
                    "files": len(manifest.get("files", {})),
                    "latest": version_dir.name == latest,
                }
            )
    return rows


def tenant_report(
    platform: Platform,
    tenant: Tenant,
    *,
    actor: str,
    redact_others: bool = False,
    verify: bool = True,
    other_ledgers: Sequence[LedgerAnswer] = (),
) -> dict[str, Any]:
    """The compliance report of `tenant` in its home region.

    `other_ledgers` are the other regions' answers about refusals involving the tenant
    (`audit.ledger_answers`); a region without one is listed as not consulted.

    With `redact_others`, other tenants' ids in refusal records that targeted this tenant
    are replaced (a tenant officer reads them). `verify` checks the region's audit chain
    (the whole chain is read).
    """
    region = Region(tenant.home_region)
    scope = Scope(tenant.id, region)
    plane = platform.plane(region)
    with plane.session(scope, actor=actor, action="audit.report") as session:
        runs = DpRunTable(session, plane.ledger).runs()
    state = budget_state(runs, cap=tenant.epsilon_cap, delta=tenant.delta)
    refusals = boundary_refusals(plane.ledger, tenant.id, redact_others=redact_others)
    ledgers = refusal_ledgers(region, refusals, other_ledgers)
    own = plane.ledger.records(tenant_id=tenant.id, action="tenant.created", limit=None)
    changes = plane.ledger.records(tenant_id=tenant.id, action=CAP_CHANGED, limit=None)
    history = cap_history(own + changes, tenant.epsilon_cap)
    run_rows = _run_rows(runs, history)
    audits = release_audits(platform, tenant.id)
    for row in run_rows:
        row["audit"] = audits.get(row["model_version"]) if row["kind"] == "train" else None
    sharing = SharingPolicy(tenant.sharing)
    return {
        "tenant_id": tenant.id,
        "name": tenant.name,
        "region": region.value,
        "sharing": sharing.value,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "generated_by": actor,
        "budget": {
            "epsilon_cap": tenant.epsilon_cap,
            "delta": tenant.delta,
            "epsilon_spent": state.spent,
            "epsilon_remaining": state.remaining,
            "exhausted": state.exhausted,
            "accountant": "rdp (opacus): composed over every charged run by the ledger",
        },
        "cap_history": [{"ts": p.ts or None, "cap": p.cap} for p in history],
        "cap_changes": [_record(r) for r in changes],
        "raise_requests": _raise_requests(platform, tenant.id),
        "runs": run_rows,
        "artifacts": _artifacts(platform, scope, actor),
        "refusals": all_refusals(region, refusals, other_ledgers),
        "refusal_ledgers": ledgers,
        "refusals_complete": all(line["answered"] for line in ledgers),
        "federation_exports": federation_exports(
            plane.ledger, tenant.id, redact_others=redact_others
        ),
        "access_refusals": [
            _record(r)
            for r in plane.ledger.records(tenant_id=tenant.id, action=ACCESS_REFUSED, limit=None)
        ],
        "federation": {
            "eligible": sharing != SharingPolicy.SOLO,
            "policy": SHARING_POLICIES[sharing],
            "stopped": state.exhausted,
            "rounds": [r for r in run_rows if r["kind"] == "federation"],
            "region_rounds": _region_rounds(plane.ledger, tenant.id, run_rows),
        },
        "chain": _chain(plane.ledger.verify(), region) if verify else None,
    }


def _raise_requests(platform: Platform, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's requests to raise its cap, newest first, with who decided them."""
    return [
        {
            "id": r.id,
            "status": r.status,
            "cap_then": r.cap_then,
            "requested_cap": r.requested_cap,
            "reason": r.reason,
            "requested_by": r.requested_by,
            "requested_at": iso(r.requested_at),
            "decided_by": r.decided_by,
            "decided_at": iso(r.decided_at),
            "decision_reason": r.decision_reason,
        }
        for r in CapRequests(platform.control.engine).of_tenant(tenant_id)
    ]


SHARING_POLICIES = {
    SharingPolicy.SOLO: "solo: never joins a federation; parameters never leave the tenant",
    SharingPolicy.REGIONAL: "regional: federates within its home region only",
    SharingPolicy.GLOBAL: "global: federates in its home region; the region's DP "
    "aggregate may feed a cross-region backbone",
}


def _run_rows(runs: list[DpRun], history: list[CapPoint]) -> list[dict[str, Any]]:
    """A row per charged run: its three epsilons (`privacy.epsilon_terms`), the cap then."""
    rows: list[dict[str, Any]] = []
    for index, (run, terms) in enumerate(zip(runs, run_epsilons(runs), strict=True), start=1):
        created = iso(run.created_at) or ""
        rows.append(
            {
                "index": index,
                "run_id": run.id,
                "kind": run.kind,
                "status": run.status,
                **terms.as_dict(),
                "cap_then": cap_at(history, created),
                "noise_multiplier": run.noise_multiplier,
                "sample_rate": run.sample_rate,
                "steps": run.steps,
                "delta": run.delta,
                "round": run.details.get("round"),
                "federation_run": run.details.get("federation_run"),
                "model_version": run.details.get("model_version"),
                "created_at": created,
                "completed_at": iso(run.completed_at),
            }
        )
    return rows


def boundary_refusals(
    ledger: AuditLedger, tenant_id: str, *, redact_others: bool
) -> list[dict[str, Any]]:
    """Boundary refusals that involved the tenant, other tenants' ids redacted on request."""
    refusals = []
    for record in ledger.concerning(tenant_id, (BOUNDARY_REFUSED,)):
        row = _record(record)
        if redact_others and record.tenant_id != tenant_id:
            row["tenant_id"] = OTHER_TENANT
            row["details"] = {
                k: (OTHER_TENANT if v == record.tenant_id else v)
                for k, v in row["details"].items()
                if k != "reason"
            }
        refusals.append(row)
    return refusals


def federation_exports(
    ledger: AuditLedger, tenant_id: str, *, redact_others: bool
) -> list[dict[str, Any]]:
    """The region's global-tier shares the tenant contributed to, oldest first.

    Each contributor's epsilon is the standalone ε of its run of the round, as the region's
    aggregator recorded it; other contributors' ids are redacted on request.
    """
    exports = []
    for record in ledger.concerning(tenant_id, (FEDERATION_EXPORTED,)):
        details = details_of(record)
        contributors = details.get("contributors")
        if not isinstance(contributors, dict) or tenant_id not in contributors:
            continue
        exports.append(
            {
                "seq": record.seq,
                "ts": record.ts,
                "share_version": record.subject.removeprefix("global-share:"),
                "tier": "global",
                "region": details.get("region"),
                "federation_run": details.get("federation_run"),
                "round": details.get("round"),
                "weight": details.get("weight"),
                "key_id": details.get("key_id"),
                "bytes": details.get("bytes"),
                "contributors": _contributors(contributors, tenant_id, redact_others),
            }
        )
    return exports


def _contributors(
    contributors: dict[str, Any], tenant_id: str, redact_others: bool
) -> list[dict[str, Any]]:
    """A share's contributors, the tenant first; redacted: the others as one withheld count."""
    own = [{"tenant_id": tenant_id, STANDALONE.key: contributors[tenant_id]}]
    others = sorted((t, e) for t, e in contributors.items() if t != tenant_id)
    if redact_others:
        return own + (
            [{"tenant_id": f"{OTHER_TENANT} x{len(others)}", STANDALONE.key: None}]
            if others
            else []
        )
    return own + [{"tenant_id": t, STANDALONE.key: e} for t, e in others]


def _region_rounds(
    ledger: AuditLedger, tenant_id: str, runs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The region's federated rounds the tenant took part in, with its run's epsilons.

    The epsilons are those of the tenant's own charged run of the round (`runs`: its run
    rows), so this table and the runs table cannot disagree; a round whose run is not in
    the tenant's budget ledger shows the standalone ε the aggregator recorded.
    """
    by_round = {(r["federation_run"], r["round"]): r for r in runs if r["kind"] == "federation"}
    rounds = []
    for record in ledger.concerning(tenant_id, (FEDERATION_ROUND,)):
        round_ = federation_round(record)
        if tenant_id not in round_["participants"]:
            continue
        run = by_round.get((round_["federation_run"], round_.get("round")))
        recorded = round_.get("epsilon")
        standalone = recorded.get(tenant_id) if isinstance(recorded, dict) else None
        rounds.append(
            {
                "seq": round_["seq"],
                "ts": round_["ts"],
                "round": round_.get("round"),
                "federation_run": round_["federation_run"],
                "status": round_.get("status"),
                "participants": len(round_["participants"]),
                "backbone_in": round_.get("backbone_in"),
                "backbone_out": round_.get("backbone_out"),
                "run_id": None if run is None else run["run_id"],
                **{term.key: (None if run is None else run[term.key]) for term in RUN_TERMS},
                **({} if run is not None else {STANDALONE.key: standalone}),
            }
        )
    return rounds


def _chain(verification: Verification, region: Region) -> dict[str, Any]:
    return {
        "ok": verification.ok,
        "records": verification.records,
        "first_bad_seq": verification.first_bad_seq,
        "reason": verification.reason,
        "summary": verification.describe(region),
    }


def report_csv(report: dict[str, Any]) -> str:
    """The report as one CSV table: a row per run, artifact, refusal, round and cap change."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    base = {"tenant_id": report["tenant_id"], "region": report["region"]}
    for rows in (
        [_budget_row(report)],
        map(_run_csv_row, report["runs"]),
        map(_cap_change_row, report["cap_changes"]),
        map(_artifact_row, report["artifacts"]),
        map(_refusal_row, report["refusals"]),
        map(_refusal_ledger_row, report["refusal_ledgers"]),
        map(_export_row, report["federation_exports"]),
        map(_round_row, report["federation"]["region_rounds"]),
        [] if report["chain"] is None else [_chain_row(report["chain"])],
    ):
        writer.writerows({**base, **row} for row in rows)
    return out.getvalue()


def _budget_row(report: dict[str, Any]) -> dict[str, Any]:
    budget = report["budget"]
    return {
        "record_type": "budget",
        "time": report["generated_at"],
        "epsilon_total_after": budget["epsilon_spent"],
        "epsilon_cap": budget["epsilon_cap"],
        "epsilon_remaining": budget["epsilon_remaining"],
        "status": "exhausted" if budget["exhausted"] else "open",
        "detail": json.dumps({"delta": budget["delta"], "sharing": report["sharing"]}),
    }


def _run_csv_row(run: dict[str, Any]) -> dict[str, Any]:
    detail_keys = ("noise_multiplier", "sample_rate", "steps", "round", "federation_run")
    return {
        "record_type": "dp_run",
        "time": run["created_at"],
        "id": run["run_id"],
        "kind": run["kind"],
        "status": run["status"],
        **{term.key: run[term.key] for term in RUN_TERMS},
        "epsilon_cap": run["cap_then"],
        "detail": json.dumps(
            {
                **{key: run[key] for key in detail_keys},
                "model_version": run["model_version"],
            }
        ),
    }


def _cap_change_row(change: dict[str, Any]) -> dict[str, Any]:
    d = change["details"]
    return {
        "record_type": "cap_change",
        "time": change["ts"],
        "id": change["seq"],
        "kind": change["actor"],
        "epsilon_cap": d.get("new_cap"),
        "epsilon_total_after": d.get("spent"),
        "detail": json.dumps({"old_cap": d.get("old_cap"), "reason": d.get("reason")}),
    }


def _artifact_row(artifact: dict[str, Any]) -> dict[str, Any]:
    return {
        "record_type": "artifact",
        "region": artifact["region"],
        "time": artifact["created_at"],
        "id": artifact["version"],
        "kind": artifact["kind"],
        "status": "attributed" if artifact["attributed"] else "MISATTRIBUTED",
        "detail": json.dumps({"stored_in": artifact["stored_in"], "files": artifact["files"]}),
    }


def _refusal_row(refusal: dict[str, Any]) -> dict[str, Any]:
    return {
        "record_type": "refusal",
        "region": refusal["ledger_region"],
        "time": refusal["ts"],
        "id": refusal["seq"],
        "kind": refusal["details"].get("attempted"),
        "status": refusal["details"].get("error"),
        "detail": json.dumps(refusal["details"], sort_keys=True),
    }


def _round_row(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("round", "participants", "backbone_in", "backbone_out")
    return {
        "record_type": "federation_round",
        "time": r["ts"],
        "id": r["seq"],
        "kind": r["federation_run"],
        **{term.key: r[term.key] for term in RUN_TERMS},
        "detail": json.dumps({key: r[key] for key in keys}),
    }


def _refusal_ledger_row(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "record_type": "refusal_ledger",
        "region": line["region"],
        "status": "answered" if line["answered"] else "not answering",
        "detail": json.dumps(
            {"reason": line["reason"], "records": line["records"], "truncated": line["truncated"]}
        ),
    }


def _export_row(export: dict[str, Any]) -> dict[str, Any]:
    keys = ("tier", "round", "weight", "key_id", "bytes", "contributors")
    return {
        "record_type": "federation_export",
        "region": export["region"],
        "time": export["ts"],
        "id": export["share_version"],
        "kind": export["federation_run"],
        "detail": json.dumps({key: export[key] for key in keys}),
    }


def _chain_row(chain: dict[str, Any]) -> dict[str, Any]:
    return {
        "record_type": "audit_chain",
        "status": "intact" if chain["ok"] else "BROKEN",
        "detail": chain["summary"],
    }
