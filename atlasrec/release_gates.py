"""The gates a release candidate passes before any user sees it (`atlasrec.releases.start`).

- **Offline gate**: on its own held-out validation data, the candidate's default order
  scored at least popularity on both questions (the floor, `atlasrec.models.ranking`), and
  at least `OFFLINE_TOLERANCE` of what the live model scored on its validation data. The
  two validation sets are each model's own (the newest interactions before its training
  snapshot), by the same protocol. A tenant too small to validate on passes, and says so.
- **Privacy gate**: the candidate's lineage verifies: its manifest is attributed to the
  tenant and region and every file matches its SHA-256; a DP model's run is in the budget
  ledger and its epsilon is within the tenant's cap; and its backbone is one the tenant's
  sharing policy allows (none for a solo tenant; a regional tenant's own region's, never
  the cross-region tier; no solo tenant, and for a regional backbone no tenant of another
  region, among its contributors).

Each gate returns its verdict with the numbers that decided it (for the ledger).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from atlasrec.artifacts import Artifact
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope, SharingPolicy
from audit.lineage import model_lineage

OFFLINE_TOLERANCE = 0.95
QUESTIONS = ("next", "profile")


@dataclass(frozen=True)
class Gate:
    """One gate's verdict and the numbers behind it."""

    name: str
    passed: bool
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


def offline_gate(candidate: Artifact, live: Artifact | None) -> Gate:
    """Candidate vs popularity and vs the live model on validation NDCG@10."""
    mine = _validation(candidate)
    if mine is None:
        return Gate("offline", True, "not validated: the tenant is too small to validate on")
    below = [q for q in QUESTIONS if mine[q] < mine[f"{q}_popularity"]]
    if below:
        return Gate("offline", False, f"below popularity on {', '.join(below)}", mine)
    theirs = None if live is None else _validation(live)
    if theirs is None:
        return Gate("offline", True, "at least popularity; no validated live model", mine)
    numbers = {**mine, **{f"live_{k}": v for k, v in theirs.items()}}
    worse = [q for q in QUESTIONS if mine[q] < OFFLINE_TOLERANCE * theirs[q]]
    if worse:
        reason = f"below {OFFLINE_TOLERANCE:g}x the live model on {', '.join(worse)}"
        return Gate("offline", False, reason, numbers)
    return Gate("offline", True, "at least popularity and the live model", numbers)


def _validation(artifact: Artifact) -> dict[str, float] | None:
    """The default order's and popularity's validation NDCG@10 per question, if validated."""
    order = (artifact.manifest.get("metadata") or {}).get("default_order") or {}
    scores = order.get("ndcg_at_10")
    if not scores:
        return None
    chosen = order.get("chosen")
    name = f"blend_{float(order.get('weight', 1.0)):.1f}" if chosen == "blend" else chosen
    out = {}
    for q in QUESTIONS:
        by_order = scores[q]
        out[q] = float(by_order.get(name, by_order.get("popularity", 0.0)))
        out[f"{q}_popularity"] = float(by_order.get("popularity", 0.0))
    return out


def privacy_gate(platform: Platform, scope: Scope, candidate: Artifact, *, actor: str) -> Gate:
    """The candidate's lineage verifies, its epsilon is within the cap, its backbone allowed."""
    tenant = platform.control.get_tenant(scope.tenant_id)
    plane = platform.plane(scope.region)
    chain = model_lineage(plane, scope, candidate.version, actor=actor)
    model, training = chain["model"], chain["training"] or {}
    numbers: dict[str, Any] = {"epsilon_cap": tenant.epsilon_cap}
    if model is None or not model["attributed"]:
        return Gate("privacy", False, "the manifest is not attributed to the tenant", numbers)
    tampered = [f for f, sha in model["files"].items() if _sha256(candidate, f) != sha]
    if tampered:
        return Gate("privacy", False, f"files differ from the manifest: {tampered}", numbers)
    dp = training.get("dp")
    if dp:
        epsilon = float(dp.get("epsilon") or 0.0)
        numbers["epsilon"] = epsilon
        if training.get("run") is None:
            return Gate("privacy", False, "its DP run is not in the budget ledger", numbers)
        if epsilon > tenant.epsilon_cap:
            return Gate("privacy", False, "its epsilon is above the tenant's cap", numbers)
    refusal = _backbone_refusal(platform, SharingPolicy(tenant.sharing), scope, chain["backbone"])
    if refusal:
        return Gate("privacy", False, refusal, numbers)
    return Gate("privacy", True, "lineage verified", numbers)


def _sha256(artifact: Artifact, name: str) -> str | None:
    path = artifact.path / name
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _backbone_refusal(
    platform: Platform, sharing: SharingPolicy, scope: Scope, backbone: dict[str, Any] | None
) -> str | None:
    """Why the tenant's policy forbids the candidate's backbone, or None."""
    if not backbone or not backbone.get("present"):
        return None
    if sharing is SharingPolicy.SOLO:
        return "a solo tenant's model starts from a federated backbone"
    region = backbone.get("region")
    if sharing is SharingPolicy.REGIONAL and region != scope.region.value:
        return f"a regional tenant's model starts from backbone of {region!r}"
    known = {t.id: t for t in platform.control.list_tenants()}
    for contributor in backbone.get("contributors") or {}:
        tenant = known.get(str(contributor))
        if tenant is None:
            continue
        if SharingPolicy(tenant.sharing) is SharingPolicy.SOLO:
            return f"solo tenant {tenant.id!r} is among the backbone's contributors"
        if region != "global" and Region(tenant.home_region).value != region:
            return f"tenant {tenant.id!r} of another region contributed to a regional backbone"
    return None
