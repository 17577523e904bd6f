"""Which tenants an audit record concerns: the one rule behind the ledger's tenant index.

A record concerns its own tenant, the tenant a refusal targeted (`target_tenant`), and the
tenants a federation record names: a round's `participants` and `epsilon` keys, an exported
share's `contributors` keys. Only strings that can be tenant ids count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from atlasrec.dataplane.tables import AuditRecord
from atlasrec.tenancy import TENANT_ID_PATTERN

FEDERATION = "federation."
FEDERATION_KEYS = ("participants", "epsilon", "contributors")
"""Details keys of federation records that name tenants (a list, or a dict keyed by tenant)."""


def tenants_of(tenant_id: str | None, action: str, details: Mapping[str, Any]) -> set[str]:
    """The tenants a record with this tenant, action and details concerns."""
    named: list[Any] = [tenant_id]
    if action.endswith(".refused"):
        named.append(details.get("target_tenant"))
    if action.startswith(FEDERATION):
        for key in FEDERATION_KEYS:
            named.extend(_names(details.get(key)))
    return {t for t in named if isinstance(t, str) and TENANT_ID_PATTERN.fullmatch(t)}


def record_tenants(record: AuditRecord) -> set[str]:
    """The tenants a stored ledger record concerns."""
    return tenants_of(record.tenant_id, record.action, parse_details(record.details))


def parse_details(text: str) -> dict[str, Any]:
    """A record's details as a dict (empty if they are not a JSON object)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _names(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        return value.keys()
    if isinstance(value, list):
        return value
    return ()
