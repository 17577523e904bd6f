"""The serving log: one append-only row per served request (lineage of each response).

Revision ID: r0003
Revises: r0002
"""

import sqlalchemy as sa
from alembic import context, op

from atlasrec.db import validate_identifier

revision = "r0003"
down_revision = "r0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "served_requests",
        sa.Column("request_id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("served_at", sa.DateTime(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("user_key", sa.String(64), nullable=True),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("cold_start", sa.Boolean(), nullable=False),
        sa.Column("degraded", sa.JSON(), nullable=False),
        sa.Column("timings_ms", sa.JSON(), nullable=False),
    )
    op.create_index(
        "ix_served_requests_tenant_served_at", "served_requests", ["tenant_id", "served_at"]
    )
    if op.get_bind().dialect.name == "postgresql":
        role = validate_identifier(context.config.attributes["app_role"])
        op.execute(f"GRANT SELECT, INSERT ON served_requests TO {role}")  # append-only
        op.execute("ALTER TABLE served_requests ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE served_requests FORCE ROW LEVEL SECURITY")
        op.execute(
            "CREATE POLICY tenant_isolation ON served_requests "
            "USING (tenant_id = current_setting('atlasrec.tenant_id', true)) "
            "WITH CHECK (tenant_id = current_setting('atlasrec.tenant_id', true))"
        )


def downgrade() -> None:
    op.drop_index("ix_served_requests_tenant_served_at", "served_requests")
    op.drop_table("served_requests")
