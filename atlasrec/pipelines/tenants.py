"""Tenant settings (API keys, event types): the control-plane change and its ledger record."""

from __future__ import annotations

from typing import Any

from atlasrec.control.service import IssuedKey
from atlasrec.event_types import BUILT_IN, tenant_types
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


def set_event_types(
    platform: Platform, tenant_id: str, types: dict[str, float] | None, *, actor: str
) -> dict[str, Any]:
    """Replace (None: clear) the tenant's own event types; recorded in its home ledger."""
    tenant = platform.control.set_event_types(tenant_id, types)
    platform.plane(platform.scope(tenant_id).region).ledger.append(
        actor=actor,
        action="event_types.set",
        subject=f"tenant:{tenant_id}",
        tenant_id=tenant_id,
        details={"event_types": tenant.event_types},
    )
    return event_types_of(tenant_id, tenant.event_types)


def event_types_of(tenant_id: str, own: dict[str, float] | None) -> dict[str, Any]:
    """What the tenant's events may be: its own types, and every type with its weight."""
    return {
        "tenant": tenant_id,
        "own": own or {},
        "built_in": BUILT_IN,
        "accepted": tenant_types(own),
    }
