"""Privacy officers of the audit UI (roles: platform with regions, or tenant).

Revision ID: c0002
Revises: c0001
"""

import sqlalchemy as sa
from alembic import op

revision = "c0002"
down_revision = "c0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "officers",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id"), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "(role = 'platform' AND tenant_id IS NULL) "
            "OR (role = 'tenant' AND tenant_id IS NOT NULL)",
            name="ck_officers_role",
        ),
    )
    op.create_index("ix_officers_tenant_id", "officers", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_officers_tenant_id", "officers")
    op.drop_table("officers")
