"""The leakage scanner: every tenant's canaries, looked for where they must never be.

Each tenant's canaries (`privacy.canaries`) are planted in its own training data only. A
scan of a region looks, for every tenant's canaries (of any region: they are derived from
the platform secret, so no other region's data is read), in:

- every model version of the region's tenants other than the canaries' owner: its files by
  exact id, and its item content by nearest neighbour (cosine >= `CONTENT_MATCH` with a
  canary's text embedding);
- the region's and the cross-region tier's backbone versions (exact ids: they leave tenants);
- every tenant's served outputs (no canary is ever served, not even to its owner);
- every tenant's exported compliance report (other tenants' canary ids);
- the fallback catalog copies of `global` tenants homed elsewhere that the region holds
  (`atlasrec.fallback`): exact ids, and their content by nearest neighbour.

A hit quarantines the artifact (never `latest`: never served, never a federation's start),
stops the region's federation until an officer resumes it, and is a ledger record
(`leakage.hit`, once per finding) that /metrics exports and alerts on. What cannot be read
is reported as unverified, never as clean. Each scan is a ledger record (`leakage.scanned`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import select

from atlasrec.artifacts import Artifact
from atlasrec.dataplane.tables import ServedRequest
from atlasrec.errors import InvalidInputError
from atlasrec.fallback import VECTORS, copy_path, held_copies, quarantine_copy
from atlasrec.federation.store import BackboneStore, global_store, region_store
from atlasrec.models.bundle import KIND as MODEL_KIND
from atlasrec.models.bundle import ModelBundle
from atlasrec.models.text import embed
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope
from audit.reports import tenant_report
from privacy.canaries import CanarySet, canaries

HIT = "leakage.hit"
SCANNED = "leakage.scanned"
FEDERATION_STOPPED = "federation.stopped"
FEDERATION_RESUMED = "federation.resumed"
CONTENT_MATCH = 0.98
"""Cosine at or above which an item's content is taken for a canary's text."""


@dataclass(frozen=True)
class Hit:
    """A canary found where it must not be."""

    owner: str
    """The tenant whose canary it is."""
    found_in: str
    """What it was found in: `model:<tenant>/<version>`, `backbone:...`, `served:...`, ..."""
    tenant_id: str | None
    """The tenant the finding is attributed to (None for a backbone)."""
    canary: str
    """The canary id, or `content:<item id>` for a nearest-neighbour match."""


@dataclass
class ScanReport:
    """What a scan looked at, what it found, and what it could not read."""

    region: str
    scanned: int = 0
    hits: list[Hit] = field(default_factory=list)
    unverified: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "region": self.region,
            "scanned": self.scanned,
            "hits": [asdict(h) for h in self.hits],
            "unverified": self.unverified,
            "clean": not self.hits and not self.unverified,
        }


def scan_region(platform: Platform, region: Region, *, actor: str) -> ScanReport:
    """Scan the region for every tenant's canaries; quarantine, stop and record on a hit."""
    sets = [canaries(platform.secret, t.id) for t in platform.control.list_tenants()]
    texts = embed([text for s in sets for text in s.texts])
    owners = [(s.tenant_id, item) for s in sets for item in s.items]
    report = ScanReport(region.value)
    for tenant in platform.control.list_tenants(region):
        scope = Scope(tenant.id, region)
        others = [s for s in sets if s.tenant_id != tenant.id]
        for artifact in _models(platform, scope, actor):
            _scan_model(platform, artifact, others, (texts, owners), report, actor)
        _scan_served(platform, scope, sets, report, actor)
        _scan_report(platform, scope, others, report, actor)
    for store in (region_store(platform.settings, region), global_store(platform.settings)):
        _scan_backbones(store, sets, report, actor)
    for owner, versions in held_copies(platform, region).items():
        others = [s for s in sets if s.tenant_id != owner]
        for version in versions:
            _scan_copy(platform, region, (owner, version), others, (texts, owners), report, actor)
    _record(platform, region, report, actor)
    return report


def federation_stopped(platform: Platform, region: Region) -> bool:
    """Whether a leak stopped the region's federation and no officer has resumed it."""
    ledger = platform.plane(region).ledger
    last = [r.action for r in ledger.records(action="federation.", limit=None)]
    decisions = [a for a in last if a in (FEDERATION_STOPPED, FEDERATION_RESUMED)]
    return bool(decisions) and decisions[-1] == FEDERATION_STOPPED


def resume(platform: Platform, region: Region, *, reason: str, actor: str) -> None:
    """Resume the region's federation after a leak was dealt with; the reason is recorded."""
    if not reason.strip():
        raise InvalidInputError("--reason must say why the federation may resume")
    if not federation_stopped(platform, region):
        raise InvalidInputError(f"region {region.value!r}: federation is not stopped")
    platform.plane(region).ledger.append(
        actor=actor,
        action=FEDERATION_RESUMED,
        subject=f"region:{region.value}",
        details={"reason": reason.strip()},
    )


def leakage_hits(platform: Platform, region: Region) -> dict[str, int]:
    """Each tenant's recorded leakage findings in `region` (a finding's tenant)."""
    counts: dict[str, int] = {}
    for record in platform.plane(region).ledger.records(action=HIT, limit=None):
        key = record.tenant_id or ""
        counts[key] = counts.get(key, 0) + 1
    return counts


def _models(platform: Platform, scope: Scope, actor: str) -> Iterator[Artifact]:
    artifacts = platform.plane(scope.region).artifacts
    for version in artifacts.versions(scope, MODEL_KIND, actor=actor):
        artifact = artifacts.get(scope, MODEL_KIND, version, actor=actor)
        if not artifacts.quarantined(artifact):
            yield artifact


def _scan_model(
    platform: Platform,
    artifact: Artifact,
    others: list[CanarySet],
    content: tuple[np.ndarray, list[tuple[str, str]]],
    report: ScanReport,
    actor: str,
) -> None:
    found_in = f"model:{artifact.tenant_id}/{artifact.version}"
    report.scanned += 1
    try:
        blobs = _files(artifact.path)
        vectors = ModelBundle.load(artifact).model.content[:-1].numpy()  # type: ignore[index]
    except Exception as exc:  # unreadable: unverified, never clean
        report.unverified.append({"target": found_in, "reason": _reason(exc)})
        return
    hits = _exact(blobs, others, found_in, artifact.tenant_id)
    hits += _near(vectors, content, {s.tenant_id for s in others}, found_in, artifact.tenant_id)
    if hits:
        platform.plane(artifact.region).artifacts.quarantine(
            artifact, f"leakage: {hits[0].owner}'s canary {hits[0].canary}", actor=actor
        )
        report.hits += hits


def _scan_copy(
    platform: Platform,
    region: Region,
    copy: tuple[str, str],
    others: list[CanarySet],
    content: tuple[np.ndarray, list[tuple[str, str]]],
    report: ScanReport,
    actor: str,
) -> None:
    tenant_id, version = copy
    path = copy_path(platform, region, tenant_id, version)
    found_in = f"fallback:{tenant_id}/{version}"
    report.scanned += 1
    try:
        blobs = _files(path)
        vectors = np.load(path / VECTORS)
    except Exception as exc:  # unreadable: unverified, never clean
        report.unverified.append({"target": found_in, "reason": _reason(exc)})
        return
    hits = _exact(blobs, others, found_in, tenant_id)
    hits += _near(vectors, content, {s.tenant_id for s in others}, found_in, tenant_id)
    if hits:
        reason = f"leakage: {hits[0].owner}'s canary {hits[0].canary}"
        quarantine_copy(platform, region, tenant_id, version, reason, actor=actor)
        report.hits += hits


def _scan_served(
    platform: Platform, scope: Scope, sets: list[CanarySet], report: ScanReport, actor: str
) -> None:
    ids = {item: s.tenant_id for s in sets for item in s.items}
    plane = platform.plane(scope.region)
    report.scanned += 1
    with plane.session(scope, actor=actor, action="leakage.scan") as session:
        rows = session.execute(select(ServedRequest.request_id, ServedRequest.items)).all()
    for request_id, items in rows:
        for item in set(items) & ids.keys():
            found_in = f"served:{scope.tenant_id}/{request_id}"
            report.hits.append(Hit(ids[item], found_in, scope.tenant_id, item))


def _scan_report(
    platform: Platform, scope: Scope, others: list[CanarySet], report: ScanReport, actor: str
) -> None:
    tenant = platform.control.get_tenant(scope.tenant_id)
    exported = json.dumps(tenant_report(platform, tenant, actor=actor, verify=False)).encode()
    report.scanned += 1
    found_in = f"report:{scope.tenant_id}"
    report.hits += _exact({"report.json": exported}, others, found_in, scope.tenant_id)


def _scan_backbones(
    store: BackboneStore, sets: list[CanarySet], report: ScanReport, actor: str
) -> None:
    for version in store.unquarantined():
        path = store.folder / version
        found_in = f"backbone:{store.domain}/{version}"
        report.scanned += 1
        try:
            blobs = _files(path)
        except OSError as exc:
            report.unverified.append({"target": found_in, "reason": _reason(exc)})
            continue
        hits = _exact(blobs, sets, found_in, None)
        if hits:
            store.quarantine(version, f"leakage: {hits[0].owner}'s canary", actor=actor)
            report.hits += hits


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _exact(
    blobs: dict[str, bytes], sets: list[CanarySet], found_in: str, tenant_id: str | None
) -> list[Hit]:
    return [
        Hit(s.tenant_id, found_in, tenant_id, canary)
        for s in sets
        for canary in (*s.items, *s.users)
        if any(canary.encode() in blob for blob in blobs.values())
    ]


def _near(
    vectors: np.ndarray,
    content: tuple[np.ndarray, list[tuple[str, str]]],
    others: set[str],
    found_in: str,
    tenant_id: str,
) -> list[Hit]:
    texts, owners = content
    if not len(vectors) or not len(texts):
        return []
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    best = (unit @ texts.T).max(axis=0)
    return [
        Hit(owner, found_in, tenant_id, f"content:{item}")
        for (owner, item), score in zip(owners, best, strict=True)
        if owner in others and score >= CONTENT_MATCH
    ]


def _record(platform: Platform, region: Region, report: ScanReport, actor: str) -> None:
    """Record the new findings, stop the federation on any, and record the scan.

    A served record or a report is found again by every scan: each finding is recorded once.
    """
    ledger = platform.plane(region).ledger
    known = {
        (d["found_in"], d["canary"])
        for d in (json.loads(r.details) for r in ledger.records(action=HIT, limit=None))
    }
    new = [h for h in report.hits if (h.found_in, h.canary) not in known]
    for hit in new:
        ledger.append(
            actor=actor,
            action=HIT,
            subject=hit.found_in,
            tenant_id=hit.tenant_id,
            details=asdict(hit),
        )
    if new and not federation_stopped(platform, region):
        ledger.append(
            actor=actor,
            action=FEDERATION_STOPPED,
            subject=f"region:{region.value}",
            details={
                "reason": f"{len(new)} new leakage finding(s)",
                "first": asdict(new[0]),
            },
        )
    ledger.append(
        actor=actor, action=SCANNED, subject=f"region:{region.value}", details=report.as_json()
    )


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
