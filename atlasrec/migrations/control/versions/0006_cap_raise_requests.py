"""Raising a tenant's epsilon cap is a request that a second officer approves.

Revision ID: c0006
Revises: c0005
"""

import sqlalchemy as sa
from alembic import op

revision = "c0006"
down_revision = "c0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cap_raise_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("cap_then", sa.Float(), nullable=False),
        sa.Column("requested_cap", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(2000), nullable=False),
        sa.Column("requested_by", sa.String(63), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(63), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decision_reason", sa.String(2000), nullable=True),
    )
    op.create_index("ix_cap_raise_requests_tenant_id", "cap_raise_requests", ["tenant_id"])
    op.create_index("ix_cap_raise_requests_status", "cap_raise_requests", ["status"])


def downgrade() -> None:
    op.drop_table("cap_raise_requests")
