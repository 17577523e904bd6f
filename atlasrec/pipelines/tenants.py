"""API key operations of a tenant: the control-plane change and its ledger record."""

from __future__ import annotations

from atlasrec.control.service import IssuedKey
from atlasrec.platform import Platform


def issue_api_key(
    platform: Platform, tenant_id: str, label: str | None, *, actor: str
) -> IssuedKey:
    """Issue another API key (its secret is in the result only) and record it in the ledger."""
    issued = platform.control.issue_api_key(tenant_id, label)
    platform.plane(platform.scope(tenant_id).region).ledger.append(
        actor=actor,
        action="api_key.issued",
        subject=f"tenant:{tenant_id}",
        tenant_id=tenant_id,
        details={"api_key_id": issued.key_id, "label": label},
    )
    return issued


def revoke_api_key(platform: Platform, tenant_id: str, key_id: str, *, actor: str) -> None:
    """Revoke an API key at once and record it in the tenant's home ledger."""
    platform.control.revoke_api_key(tenant_id, key_id)
    platform.plane(platform.scope(tenant_id).region).ledger.append(
        actor=actor,
        action="api_key.revoked",
        subject=f"tenant:{tenant_id}",
        tenant_id=tenant_id,
        details={"api_key_id": key_id},
    )
