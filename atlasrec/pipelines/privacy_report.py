"""`atlasrec privacy report`: every DP run of a tenant, and its budget."""

from __future__ import annotations

from typing import Any

from atlasrec.dataplane.dp_runs import DpRunTable, budget_state, mechanism_of
from atlasrec.platform import Platform
from privacy.accounting import independent_epsilon


def privacy_report(platform: Platform, tenant_id: str, *, actor: str) -> dict[str, Any]:
    """The tenant's DP runs, the composed epsilon (cross-checked) and what is left."""
    tenant = platform.control.get_tenant(tenant_id)
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    with plane.session(scope, actor=actor, action="privacy.report") as s:
        runs = DpRunTable(s, plane.ledger).runs()
    state = budget_state(runs, cap=tenant.epsilon_cap, delta=tenant.delta)
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
                "epsilon_total_after": r.epsilon_total,
                "model_version": r.details.get("model_version"),
                "federation_run": r.details.get("federation_run"),
                "round": r.details.get("round"),
                "created_at": r.created_at.isoformat(),
            }
            for r in runs
        ],
    }
