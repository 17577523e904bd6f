"""The empirical privacy audit of each DP release (`atlasrec privacy audit`, Celery beat).

A DP release is a published model whose lineage has a `dp` entry. Its audit reruns the
release's mechanism with canaries (`atlasrec.models.dp_audit`) and its non-DP control, and
records both in the region's ledger (`privacy.audited`): the claimed epsilon (the DP-SGD
run's), the empirical lower bound and the attack's AUC. A lower bound above the claimed
epsilon is an alarm: it is recorded as one, exported (`atlasrec_privacy_audit_alarm`) and
alerts (AtlasRecPrivacyAuditAlarm). `atlasrec privacy report` and the officer UI show each
release's audit next to its claim.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from typing import Any

import numpy as np

from atlasrec.artifacts import Artifact
from atlasrec.errors import InvalidInputError, NotFoundError
from atlasrec.models.bundle import KIND, ModelBundle
from atlasrec.models.dp_audit import audit_run
from atlasrec.models.training import DpPlan
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope

AUDITED = "privacy.audited"
log = logging.getLogger("atlasrec.monitor")


def audit_release(
    platform: Platform, tenant_id: str, *, actor: str, version: str | None = None
) -> dict[str, Any]:
    """Audit the tenant's DP release `version` (default: its live model); the record."""
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    artifact = _release(platform, scope, version, actor)
    lineage = artifact.manifest.get("metadata", {})
    dp = lineage.get("dp")
    if not dp:
        raise InvalidInputError(
            f"tenant {tenant_id!r}: model {artifact.version} was trained without DP; "
            "there is no privacy claim to audit"
        )
    content, config, plan = _mechanism(artifact, lineage, dp)
    seed = int(hashlib.sha256(artifact.version.encode()).hexdigest()[:8], 16)
    audited = audit_run(content, config, plan, lineage["users"], seed=seed)
    control = audit_run(content, config, None, lineage["users"], seed=seed)
    claimed = float(dp.get("dp_sgd_epsilon") or dp["epsilon"])
    details = {
        "model_version": artifact.version,
        "dp_run_id": dp.get("dp_run_id"),
        "claimed_epsilon": claimed,
        **asdict(audited),
        "control": asdict(control),
        "alarm": audited.epsilon_lower_bound > claimed,
    }
    plane.ledger.append(
        actor=actor,
        action=AUDITED,
        subject=f"model:{KIND}/{artifact.version}",
        tenant_id=tenant_id,
        details=details,
    )
    return {"tenant_id": tenant_id, "region": scope.region.value, **details}


def _mechanism(
    artifact: Artifact, lineage: dict[str, Any], dp: dict[str, Any]
) -> tuple[np.ndarray, TwoTowerConfig, DpPlan]:
    """What the release's DP-SGD run was: its catalog content, model and DP plan."""
    bundle = ModelBundle.load(artifact)
    content = bundle.model.content[:-1].numpy()  # type: ignore[index]  # the padding row
    plan = DpPlan(
        dp["noise_multiplier"], dp["sample_rate"], dp["steps"], dp["max_grad_norm"], dp["delta"]
    )
    return content, TwoTowerConfig(**lineage["hyperparameters"]), plan


def audit_pending(platform: Platform, region: Region, *, actor: str) -> list[dict[str, Any]]:
    """Audit every tenant's live DP release that has no audit yet."""
    done = {a["model_version"] for a in _audits(platform, region)}
    audited = []
    for tenant in platform.control.list_tenants(region):
        scope = Scope(tenant.id, region)
        live = platform.plane(region).artifacts.latest(scope, KIND, actor=actor)
        if live is None or live.version in done or not live.manifest.get("metadata", {}).get("dp"):
            continue
        try:
            audited.append(audit_release(platform, tenant.id, actor=actor, version=live.version))
        except Exception:  # one tenant's unreadable release does not stop the others' audits
            log.exception("privacy audit of %s's model %s failed", tenant.id, live.version)
    return audited


def release_audits(platform: Platform, tenant_id: str) -> dict[str, dict[str, Any]]:
    """The tenant's recorded audits by model version (the latest per version)."""
    scope = platform.scope(tenant_id)
    records = platform.plane(scope.region).ledger.records(
        tenant_id=tenant_id, action=AUDITED, limit=None
    )
    return {d["model_version"]: d for d in (json.loads(r.details) for r in records)}


def audit_alarms(platform: Platform, region: Region) -> dict[str, bool]:
    """Each audited tenant: whether its last audit's lower bound exceeded the claim."""
    latest = platform.plane(region).ledger.latest_by_tenant(AUDITED)
    return {t: bool(json.loads(r.details)["alarm"]) for t, r in latest.items()}


def _audits(platform: Platform, region: Region) -> list[dict[str, Any]]:
    records = platform.plane(region).ledger.records(action=AUDITED, limit=None)
    return [json.loads(r.details) for r in records]


def _release(platform: Platform, scope: Scope, version: str | None, actor: str) -> Artifact:
    artifacts = platform.plane(scope.region).artifacts
    if version is None:
        live = artifacts.latest(scope, KIND, actor=actor)
        if live is None:
            raise NotFoundError(f"tenant {scope.tenant_id!r} has no model to audit")
        return live
    return artifacts.get(scope, KIND, version, actor=actor)
