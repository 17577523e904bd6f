"""Lineage: from a served request back to its model, training run, data and backbone.

One chain, used by `atlasrec audit lineage` and by the audit UI:

request (served_requests) -> model version (its artifact manifest: tenant, region, files)
-> training: the DP run charged for it (or "no DP"), with its epsilons (the vocabulary of
   `privacy.epsilon_terms`: the model ε, and each run's standalone ε, increment and composed
   total after)
-> data snapshot: the hash recorded at training, checked against the ingested files' hashes
-> backbone: the parent backbone version (or "no backbone (solo-trained)"), the tenants that
   contributed to it and the epsilon each was charged, and the federated rounds behind it
   (the region's `federation.round` ledger records, followed from `backbone_out` back
   through `backbone_in`), with this tenant's own round charges.

Everything is read under the tenant's scope in its home region; nothing crosses regions.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from atlasrec.artifacts import MANIFEST
from atlasrec.dataplane.session import TenantSession
from atlasrec.dataplane.tables import AuditRecord, DpRun, IngestBatch, ServedRequest
from atlasrec.errors import InvalidInputError, NotFoundError
from atlasrec.models.bundle import KIND as MODEL_KIND
from atlasrec.offline_store import files_snapshot, ingested_sha
from atlasrec.platform import Plane, Platform
from atlasrec.tenancy import Region, Scope
from privacy.epsilon_terms import MODEL, RunEpsilons, run_epsilons

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FEDERATION_ROUND = "federation.round"
NO_BACKBONE = "no backbone (solo-trained)"
_VERSION = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{6}$")
_SNAPSHOT_LOOKBACK = 50


class UnknownRequestError(NotFoundError):
    """No served request with this id in the regions searched."""


def iso(value: datetime | None) -> str | None:
    """ISO 8601 text of a time (naive database times are UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def details_of(record: AuditRecord) -> dict[str, Any]:
    """A ledger record's details as a dict (empty if they are not a JSON object)."""
    try:
        value = json.loads(record.details)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def validate_request_id(request_id: str) -> str:
    """Return `request_id` if it can name a served request."""
    if not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise InvalidInputError(
            f"field 'request_id': {request_id[:80]!r} is not a request id "
            "(1-64 characters of A-Z, a-z, 0-9, '_' and '-')"
        )
    return request_id


def find_request(
    platform: Platform,
    request_id: str,
    *,
    regions: Sequence[Region],
    actor: str,
    tenants: Iterable[str] | None = None,
) -> tuple[Scope, ServedRequest]:
    """The served request and its tenant's scope, looked up tenant by tenant in `regions`.

    Each tenant's rows are read through its own scoped session (row-level security holds);
    `tenants` narrows the search to those tenant ids.
    """
    validate_request_id(request_id)
    wanted = None if tenants is None else set(tenants)
    for region in regions:
        plane = platform.plane(region)
        for tenant in platform.control.list_tenants(region):
            if wanted is not None and tenant.id not in wanted:
                continue
            scope = Scope(tenant.id, region)
            with plane.session(scope, actor=actor, action="audit.lineage") as session:
                row = session.get(ServedRequest, request_id)
            if row is not None:
                return scope, row
    where = ", ".join(r.value for r in regions)
    raise UnknownRequestError(f"no served request {request_id!r} in region(s) {where}")


def request_lineage(
    platform: Platform, scope: Scope, request: ServedRequest, *, actor: str
) -> dict[str, Any]:
    """The whole chain of one served request, as plain data."""
    plane = platform.plane(scope.region)
    chain: dict[str, Any] = {
        "request": {
            "request_id": request.request_id,
            "tenant_id": request.tenant_id,
            "region": scope.region.value,
            "served_at": iso(request.served_at),
            "model_version": request.model_version,
            "k": request.k,
            "items_returned": len(request.items),
            "cold_start": request.cold_start,
            "degraded": list(request.degraded),
            "intent": request.intent,
            "arm": request.arm,
            "shadow_of": request.shadow_of,
            "experiment_id": request.experiment_id,
            "teams": request.teams,
        }
    }
    chain.update(model_lineage(plane, scope, request.model_version, actor=actor))
    return chain


def model_lineage(plane: Plane, scope: Scope, version: str | None, *, actor: str) -> dict[str, Any]:
    """Model, training run, data snapshot and backbone of one model version."""
    if version is None or not _VERSION.fullmatch(version):
        note = (
            f"no trained model: served as {version!r} (content embeddings only, before the "
            "tenant's first model; no user data was trained on)"
        )
        return {
            "model": None,
            "model_note": note,
            "training": None,
            "data_snapshot": None,
            "backbone": {"present": False, "note": NO_BACKBONE},
        }
    manifest = _manifest(plane, scope, version, actor=actor)
    if manifest is None:
        return {
            "model": None,
            "model_note": f"model version {version} is not in the region's artifact store",
            "training": None,
            "data_snapshot": None,
            "backbone": None,
        }
    meta: dict[str, Any] = manifest.get("metadata") or {}
    model = {
        "kind": manifest.get("kind"),
        "version": version,
        "tenant_id": manifest.get("tenant_id"),
        "region": manifest.get("region"),
        "attributed": manifest.get("tenant_id") == scope.tenant_id
        and manifest.get("region") == scope.region.value,
        "created_at": manifest.get("created_at"),
        "code_version": meta.get("code_version"),
        "hyperparameters": meta.get("hyperparameters"),
        "users": meta.get("users"),
        "items": meta.get("items"),
        "interactions": meta.get("interactions"),
        "files": manifest.get("files", {}),
        "default_order": meta.get("default_order"),
    }
    parent = meta.get("parent_backbone")
    rounds = _backbone_rounds(plane, scope, parent)  # the ledger first: one transaction at a time
    with plane.session(scope, actor=actor, action="audit.lineage") as session:
        terms = _run_terms(session)
        training = _training(session, meta.get("dp"), terms)
        snapshot = _snapshot(
            session,
            plane.offline.scoped(scope, actor=actor).files(),
            meta.get("data_snapshot"),
            manifest.get("created_at"),
        )
        backbone = _backbone(session, scope, parent, rounds, terms)
    return {
        "model": model,
        "model_note": None,
        "training": training,
        "data_snapshot": snapshot,
        "backbone": backbone,
    }


def _manifest(plane: Plane, scope: Scope, version: str, *, actor: str) -> dict[str, Any] | None:
    """The manifest of a model version (read after the boundary admits the scope)."""
    plane.boundary.admit(scope, actor=actor, action="artifact.read", subject="audit.lineage")
    path = plane.artifacts.root / scope.tenant_id / MODEL_KIND / version / MANIFEST
    if not path.is_file():
        return None
    value = json.loads(path.read_text())
    return value if isinstance(value, dict) else None


def _run_terms(session: TenantSession) -> dict[str, RunEpsilons]:
    """The epsilons of each of the tenant's runs, by run id (computed over all of them)."""
    runs = list(
        session.execute(select(DpRun).order_by(col(DpRun.created_at), col(DpRun.id))).scalars()
    )
    return {run.id: terms for run, terms in zip(runs, run_epsilons(runs), strict=True)}


def _run_dict(run: DpRun, terms: dict[str, RunEpsilons]) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "kind": run.kind,
        "status": run.status,
        **terms[run.id].as_dict(),
        "noise_multiplier": run.noise_multiplier,
        "sample_rate": run.sample_rate,
        "steps": run.steps,
        "delta": run.delta,
        "created_at": iso(run.created_at),
        "completed_at": iso(run.completed_at),
        "details": run.details,
    }


def _training(
    session: TenantSession, dp: dict[str, Any] | None, terms: dict[str, RunEpsilons]
) -> dict[str, Any]:
    if not dp:
        return {
            "dp": None,
            "run": None,
            MODEL.key: None,
            "note": "trained without DP: tenant-local, nothing charged, nothing shared",
        }
    run_id = dp.get("dp_run_id")
    run = session.get(DpRun, run_id) if isinstance(run_id, str) else None
    release_id = (dp.get("popularity_release") or {}).get("dp_run_id")
    release = session.get(DpRun, release_id) if isinstance(release_id, str) else None
    missing = [r for r, found in ((run_id, run), (release_id, release)) if r and found is None]
    return {
        "dp": dp,
        MODEL.key: dp.get("epsilon"),
        "run": None if run is None else _run_dict(run, terms),
        "popularity_release": None if release is None else _run_dict(release, terms),
        "note": None
        if not missing
        else f"DP run {', '.join(map(repr, missing))} is not in the budget ledger",
    }


def snapshot_of(pairs: Iterable[tuple[str, str]]) -> str:
    """The data snapshot hash over (kind, sha256) of ingested files (`snapshot_hash`'s rule)."""
    return hashlib.sha256("".join(f"{k}:{s};" for k, s in sorted(pairs)).encode()).hexdigest()


def _with_parquet(batches: Sequence[IngestBatch], parquet: Sequence[Path]) -> str:
    """`snapshot_hash` of `batches`, combined with the Parquet files training read.

    Those are the offline store's live files less ingested files of later batches (named by
    their source file's sha256), as `training_data` combines them.
    """
    shas = {b.sha256[:32] for b in batches}
    files = [f for f in parquet if (sha := ingested_sha(f)) is None or sha in shas]
    base = snapshot_of((b.kind, b.sha256) for b in batches)
    if not files:
        return base
    return hashlib.sha256(f"{base}:{files_snapshot(files)}".encode()).hexdigest()


def _snapshot(
    session: TenantSession, parquet: Sequence[Path], recorded: str | None, trained_at: str | None
) -> dict[str, Any] | None:
    """The recorded snapshot hash, and the ingested files it is verified against.

    The snapshot is the set of files ingested when training read the data: the latest
    prefix of batches (by time) up to the model's publication whose hash matches (with the
    offline store's Parquet files of those batches, and its events as they are now).
    """
    if recorded is None:
        return None
    batches = list(
        session.execute(
            select(IngestBatch).order_by(col(IngestBatch.created_at), col(IngestBatch.id))
        ).scalars()
    )
    cutoff = len(batches)
    if trained_at is not None:
        limit = datetime.fromisoformat(trained_at)
        cutoff = sum(
            1
            for b in batches
            if (b.created_at if b.created_at.tzinfo else b.created_at.replace(tzinfo=UTC)) <= limit
        )
    matched: list[IngestBatch] | None = None
    for end in range(cutoff, max(-1, cutoff - _SNAPSHOT_LOOKBACK - 1), -1):
        if recorded in (
            snapshot_of((b.kind, b.sha256) for b in batches[:end]),
            _with_parquet(batches[:end], parquet),
        ):
            matched = batches[:end]
            break
    files = [
        {
            "kind": b.kind,
            "file": b.filename,
            "sha256": b.sha256,
            "rows": b.rows,
            "inserted": b.inserted,
            "ingested_at": iso(b.created_at),
        }
        for b in (matched or [])
        if b.kind != "events"
    ]
    events = [b for b in (matched or []) if b.kind == "events"]
    return {
        "hash": recorded,
        "verified": matched is not None,
        "files": files,
        "event_batches": len(events),
        "event_rows": sum(b.inserted for b in events),
    }


def participants_of(details: dict[str, Any]) -> list[str]:
    """The tenant ids of a round's participants (a list, or a dict keyed by tenant)."""
    value = details.get("participants")
    if isinstance(value, dict):
        return sorted(str(k) for k in value)
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def federation_round(record: AuditRecord) -> dict[str, Any]:
    """A `federation.round` record as plain data: its details, participants and run id."""
    details = details_of(record)
    run = details.get("federation_run")
    if run is None and record.subject.startswith("federation:"):
        run = record.subject.split(":", 1)[1].split("/", 1)[0]
    return {
        **details,
        "seq": record.seq,
        "ts": record.ts,
        "federation_run": run,
        "participants": participants_of(details),
    }


def round_chain(plane: Plane, version: str) -> list[dict[str, Any]]:
    """The federated rounds that produced backbone `version`, oldest first.

    Follows the region's `federation.round` records from the one whose `backbone_out` is
    `version` back through each round's `backbone_in`.
    """
    by_output: dict[str, dict[str, Any]] = {}
    for record in plane.ledger.records(action=FEDERATION_ROUND, limit=None):
        round_ = federation_round(record)
        out = round_.get("backbone_out")
        if isinstance(out, str) and out != round_.get("backbone_in"):  # failed rounds keep it
            by_output[out] = round_
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: Any = version
    while isinstance(current, str) and current in by_output and current not in seen:
        seen.add(current)
        chain.append(by_output[current])
        current = by_output[current].get("backbone_in")
    return chain[::-1]


def _declared(parent: Any, scope: Scope) -> dict[str, Any]:
    declared: dict[str, Any] = parent if isinstance(parent, dict) else {"version": str(parent)}
    return {**declared, "region": declared.get("region") or scope.region.value}


def _backbone_rounds(plane: Plane, scope: Scope, parent: Any) -> list[dict[str, Any]]:
    """The rounds behind a parent backbone of this region (another region's are not read)."""
    if not parent:
        return []
    declared = _declared(parent, scope)
    version = declared.get("version")
    if declared["region"] != scope.region.value or not isinstance(version, str):
        return []
    return round_chain(plane, version)


def _backbone(
    session: TenantSession,
    scope: Scope,
    parent: Any,
    rounds: list[dict[str, Any]],
    terms: dict[str, RunEpsilons],
) -> dict[str, Any]:
    if not parent:
        return {"present": False, "note": NO_BACKBONE}
    declared = _declared(parent, scope)
    version = declared.get("version")
    region = declared["region"]
    contributors = declared.get("contributors") or {}
    note = None
    if region == "global":
        note = (
            "the cross-region backbone, combined from regions' DP aggregates: each share's "
            "rounds are recorded in its own region's ledger, which this region does not read"
        )
    elif region != scope.region.value:
        note = (
            f"a backbone of region {region!r}: its rounds are recorded in that region's "
            "ledger, which this region does not read"
        )
    elif not rounds:
        note = f"no federation.round records lead to backbone {version!r} in this region"
    outputs = {r.get("backbone_out") for r in rounds}
    played = {(r.get("federation_run"), r.get("round")) for r in rounds}
    own = [
        _run_dict(run, terms)
        for run in session.execute(
            select(DpRun).where(DpRun.kind == "federation").order_by(col(DpRun.created_at))
        ).scalars()
        if run.details.get("backbone_out") in outputs
        or (run.details.get("federation_run"), run.details.get("round")) in played
    ]
    return {
        "present": True,
        "version": version,
        "region": region,
        "contributors": contributors,
        "declared": declared,
        "rounds": rounds,
        "tenant_rounds": own,
        "note": note,
    }


def _eps(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else str(value)


def _terms_text(run: dict[str, Any]) -> str:
    """A run's three epsilons, each named."""
    return (
        f"standalone ε {_eps(run['epsilon_standalone'])}  increment "
        f"{_eps(run['epsilon_increment'])}  composed total after "
        f"{_eps(run['epsilon_total_after'])}"
    )


def order_text(order: dict[str, Any]) -> str:
    """A model's default order as one line: what was chosen and why."""
    chosen = order.get("chosen")
    weight = f" (next weight {order['weight']:g})" if chosen == "blend" else ""
    below = order.get("below_popularity") or []
    floor = f"; served popularity for: {', '.join(below)}" if below else ""
    return f"{chosen}{weight}: {order.get('reason')}{floor}"


def lineage_lines(chain: dict[str, Any]) -> list[str]:
    """The chain as indented text lines, for the command line."""
    req = chain["request"]
    lines = [
        f"request {req['request_id']}  tenant {req['tenant_id']}  region {req['region']}  "
        f"served {req['served_at']}  k={req['k']} ({req['items_returned']} items)  "
        f"cold_start={req['cold_start']}  degraded={req['degraded'] or 'no'}  "
        f"intent={req['intent']}  arm={req['arm']}"
        + (f" (shadow of {req['shadow_of']})" if req.get("shadow_of") else "")
        + (f"  experiment {req['experiment_id']}" if req.get("experiment_id") else "")
        + (f" (teams {req['teams']})" if req.get("teams") else ""),
    ]
    model = chain.get("model")
    if model is None:
        lines.append(f"  model: {chain.get('model_note')}")
        return lines
    lines.append(
        f"  model {model['kind']}/{model['version']}  tenant {model['tenant_id']}  region "
        f"{model['region']}  published {model['created_at']}  code {model['code_version']}  "
        f"({model['users']} users, {model['items']} items)"
        + ("" if model["attributed"] else "  [MISATTRIBUTED ARTIFACT]")
    )
    order = model.get("default_order")
    if order:
        lines.append(f"    default order: {order_text(order)}")
    training = chain["training"]
    run = training.get("run")
    dp = training.get("dp")
    if dp is None:
        lines.append(f"    training: {training['note']}")
    else:
        status = f"DP run {dp.get('dp_run_id')}" + (f" ({run['status']})" if run else "")
        lines.append(
            f"    training: {status}  model ε {_eps(dp.get('epsilon'))}  "
            f"noise {_eps(dp.get('noise_multiplier'))}  q={_eps(dp.get('sample_rate'))}  "
            f"steps={dp.get('steps')}  delta={dp.get('delta')}"
        )
        if run:
            lines.append(f"      DP-SGD run: {_terms_text(run)}")
        release = training.get("popularity_release")
        if release:
            lines.append(
                f"      popularity prior: count release {release['run_id']} ({release['status']})"
                f"  noise {_eps(release['noise_multiplier'])}  {_terms_text(release)}"
            )
        if training.get("note"):
            lines.append(f"      {training['note']}")
    snapshot = chain.get("data_snapshot")
    if snapshot is not None:
        state = "verified against" if snapshot["verified"] else "NOT matched by"
        lines.append(f"    data snapshot {snapshot['hash']} ({state} the ingested files)")
        for f in snapshot["files"]:
            lines.append(
                f"      {f['kind']:<12} {f['file']}  sha256 {f['sha256']}  {f['rows']} rows  "
                f"ingested {f['ingested_at']}"
            )
        if snapshot["event_batches"]:
            lines.append(
                f"      events       {snapshot['event_batches']} batches from the serving API "
                f"({snapshot['event_rows']} rows)"
            )
    backbone = chain.get("backbone") or {}
    if not backbone.get("present"):
        lines.append(f"    backbone: {backbone.get('note', NO_BACKBONE)}")
        return lines
    lines.append(f"    backbone {backbone['version']}  region {backbone['region']}")
    for tenant_id, epsilon in sorted(backbone["contributors"].items()):
        lines.append(
            f"      contributor {tenant_id}: standalone ε {_eps(epsilon)} (its round that "
            "produced this version)"
        )
    for share_region, share in sorted((backbone["declared"].get("shares") or {}).items()):
        lines.append(f"      share of region {share_region}: {share}")
    for r in backbone["rounds"]:
        lines.append(
            f"      round {r.get('round')} of {r.get('federation_run')}  "
            f"{r.get('backbone_in') or '(initial)'} -> {r.get('backbone_out')}  "
            f"participants {r.get('participants')}  ledger seq {r['seq']}"
        )
    for run in backbone["tenant_rounds"]:
        snapshot = run["details"].get("data_snapshot")
        lines.append(
            f"      this tenant's charge: round {run['details'].get('round')}  "
            f"{_terms_text(run)}  (DP run {run['run_id']}"
            + (f", data snapshot {snapshot})" if snapshot else ")")
        )
    if backbone.get("note"):
        lines.append(f"      {backbone['note']}")
    return lines
