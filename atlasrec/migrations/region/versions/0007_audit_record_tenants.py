"""The ledger's tenant index: every tenant each audit record concerns (`audit_record_tenants`).

A record concerns its own tenant, a refusal's `target_tenant`, and the tenants a federation
record names (`participants`, `epsilon` and `contributors` keys); the audit log searches by
tenant through this index. Existing records are indexed here by a frozen copy of that rule
as of this revision (`atlasrec.dataplane.audit_tenants` holds the live one, which the
ledger applies to new records), so this migration's meaning never changes later. The
records themselves, and their hashes, are untouched. Append-only by privilege on PostgreSQL.

Revision ID: r0007
Revises: r0006
"""

import json
import re
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from atlasrec.db import validate_identifier

revision = "r0007"
down_revision = "r0006"
branch_labels = None
depends_on = None

_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{1,62}$")
_BATCH = 2000


def upgrade() -> None:
    op.create_table(
        "audit_record_tenants",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("tenant_id", sa.String(63), primary_key=True),
    )
    op.create_index(
        "ix_audit_record_tenants_tenant_id", "audit_record_tenants", ["tenant_id", "seq"]
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        role = validate_identifier(context.config.attributes["app_role"])
        op.execute(f"GRANT SELECT, INSERT ON audit_record_tenants TO {role}")  # append-only
    insert = sa.text("INSERT INTO audit_record_tenants (seq, tenant_id) VALUES (:seq, :tenant_id)")
    for rows in _index_rows(bind):
        bind.execute(insert, rows)


def downgrade() -> None:
    op.drop_index("ix_audit_record_tenants_tenant_id", "audit_record_tenants")
    op.drop_table("audit_record_tenants")


def _index_rows(bind: sa.Connection) -> Iterator[list[dict[str, Any]]]:
    """The index rows of the existing records, in batches (keyset-paged by seq)."""
    select = sa.text(
        "SELECT seq, tenant_id, action, details FROM audit_records WHERE seq > :after "
        "ORDER BY seq LIMIT :n"
    )
    after = 0
    while records := bind.execute(select, {"after": after, "n": _BATCH}).all():
        rows = [
            {"seq": seq, "tenant_id": t}
            for seq, tenant_id, action, details in records
            for t in sorted(_tenants(tenant_id, action, details))
        ]
        if rows:
            yield rows
        after = records[-1][0]


def _tenants(tenant_id: str | None, action: str, text: str) -> set[str]:
    """The rule as of r0007: own tenant, a refusal's target, a federation record's tenants."""
    try:
        details = json.loads(text)
    except ValueError:
        details = {}
    if not isinstance(details, dict):
        details = {}
    named: list[Any] = [tenant_id]
    if action.endswith(".refused"):
        named.append(details.get("target_tenant"))
    if action.startswith("federation."):
        for key in ("participants", "epsilon", "contributors"):
            value = details.get(key)
            if isinstance(value, (dict, list)):
                named.extend(value)  # a list's items, a dict's keys
    return {t for t in named if isinstance(t, str) and _TENANT_ID.fullmatch(t)}
