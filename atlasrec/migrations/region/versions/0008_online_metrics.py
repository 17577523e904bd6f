"""Online metrics per tenant, day and model version, from outcomes tied to served requests.

Revision ID: r0008
Revises: r0007
"""

import sqlalchemy as sa
from alembic import context, op

from atlasrec.db import validate_identifier

revision = "r0008"
down_revision = "r0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "online_metrics",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("model_version", sa.String(64), primary_key=True),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        role = validate_identifier(context.config.attributes["app_role"])
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON online_metrics TO {role}")
        op.execute("ALTER TABLE online_metrics ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE online_metrics FORCE ROW LEVEL SECURITY")
        op.execute(
            "CREATE POLICY tenant_isolation ON online_metrics "
            "USING (tenant_id = current_setting('atlasrec.tenant_id', true)) "
            "WITH CHECK (tenant_id = current_setting('atlasrec.tenant_id', true))"
        )


def downgrade() -> None:
    op.drop_table("online_metrics")
