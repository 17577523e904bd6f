"""Ledger records as the audit log shows them to one officer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from atlasrec.dataplane.audit_tenants import parse_details, record_tenants
from atlasrec.dataplane.tables import AuditRecord
from audit.reports import OTHER_TENANT
from audit.ui.redaction import redact, redact_text


@dataclass(frozen=True)
class LogRow:
    """One record as shown: other tenants' ids redacted for a tenant officer."""

    seq: int
    ts: str
    tenant_id: str | None
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    hash: str

    def text(self) -> str:
        """What a text search matches: subject, details and actor as shown."""
        return "\n".join((self.subject, json.dumps(self.details, sort_keys=True), self.actor))


def log_row(record: AuditRecord, *, viewer_tenant: str | None) -> LogRow:
    """`record` as shown to a tenant officer of `viewer_tenant` (None: a platform officer)."""
    details = parse_details(record.details)
    others = record_tenants(record) - {viewer_tenant} if viewer_tenant else set()
    tenant_id = record.tenant_id
    if tenant_id in others:
        tenant_id = OTHER_TENANT
    return LogRow(
        seq=record.seq,
        ts=record.ts,
        tenant_id=tenant_id,
        actor=redact_text(record.actor, others),
        action=record.action,
        subject=redact_text(record.subject, others),
        details=redact(details, others),
        hash=record.hash,
    )
