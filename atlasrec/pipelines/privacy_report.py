"""`atlasrec privacy report`: every DP run of a tenant, its budget, and each release's audit."""

from __future__ import annotations

from typing import Any

from atlasrec.dataplane.dp_runs import DpRunTable, budget_state, mechanism_of
from atlasrec.platform import Platform
from atlasrec.privacy_audit import release_audits
from privacy.accounting import independent_epsilon
from privacy.epsilon_terms import run_epsilons


def privacy_report(platform: Platform, tenant_id: str, *, actor: str) -> dict[str, Any]:
    """The tenant's DP runs, the composed epsilon (cross-checked) and what is left.

    Each run carries its three epsilons (`privacy.epsilon_terms`); `epsilon` is kept as the
    command-line contract's name of the standalone one.
    """
    tenant = platform.control.get_tenant(tenant_id)
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    with plane.session(scope, actor=actor, action="privacy.report") as s:
        runs = DpRunTable(s, plane.ledger).runs()
    state = budget_state(runs, cap=tenant.epsilon_cap, delta=tenant.delta)
    audits = release_audits(platform, tenant_id)
    return {
        "tenant_id": tenant_id,
        "region": scope.region.value,
        "epsilon_cap": tenant.epsilon_cap,
        "delta": tenant.delta,
        "epsilon_spent": state.spent,
        "epsilon_remaining": state.remaining,
        "accountant": "rdp (opacus)",
        "epsilon_spent_independent": independent_epsilon(
            [mechanism_of(r) for r in runs], tenant.delta
        ),
        "runs": [
            {
                "run_id": r.id,
                "kind": r.kind,
                "status": r.status,
                "noise_multiplier": r.noise_multiplier,
                "sample_rate": r.sample_rate,
                "steps": r.steps,
                "delta": r.delta,
                "epsilon": r.epsilon,
                **terms.as_dict(),
                "model_version": r.details.get("model_version"),
                "federation_run": r.details.get("federation_run"),
                "round": r.details.get("round"),
                "created_at": r.created_at.isoformat(),
                "audit": _audit_of(r.kind, r.details.get("model_version"), audits),
            }
            for r, terms in zip(runs, run_epsilons(runs), strict=True)
        ],
    }


def _audit_of(
    kind: str, version: str | None, audits: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """A DP training run's empirical audit: the recorded one, `pending`, or None (no model)."""
    if kind != "train" or version is None:
        return None
    audit = audits.get(version)
    if audit is None:
        return {"status": "pending"}
    keys = ("claimed_epsilon", "epsilon_lower_bound", "auc", "canaries", "alarm")
    control = audit["control"]
    return {
        "status": "alarm" if audit["alarm"] else "audited",
        **{k: audit[k] for k in keys},
        "control": {"epsilon_lower_bound": control["epsilon_lower_bound"], "auc": control["auc"]},
    }
