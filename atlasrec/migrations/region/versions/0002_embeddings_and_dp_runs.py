"""Item embedding cache and the DP budget ledger.

Revision ID: r0002
Revises: r0001
"""

import sqlalchemy as sa
from alembic import context, op

from atlasrec.db import validate_identifier

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None

NEW_TENANT_TABLES = ("item_embeddings", "dp_runs")


def upgrade() -> None:
    op.create_table(
        "item_embeddings",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("item_id", sa.String(256), primary_key=True),
        sa.Column("encoder", sa.String(64), primary_key=True),
        sa.Column("content_sha", sa.String(64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "item_id"], ["items.tenant_id", "items.item_id"], ondelete="CASCADE"
        ),
    )
    op.create_table(
        "dp_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("noise_multiplier", sa.Float(), nullable=False),
        sa.Column("sample_rate", sa.Float(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("epsilon_total", sa.Float(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_dp_runs_tenant_id", "dp_runs", ["tenant_id"])
    if op.get_bind().dialect.name == "postgresql":
        role = validate_identifier(context.config.attributes["app_role"])
        for table in NEW_TENANT_TABLES:
            op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}")
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(
                f"CREATE POLICY tenant_isolation ON {table} "
                "USING (tenant_id = current_setting('atlasrec.tenant_id', true)) "
                "WITH CHECK (tenant_id = current_setting('atlasrec.tenant_id', true))"
            )


def downgrade() -> None:
    op.drop_index("ix_dp_runs_tenant_id", "dp_runs")
    op.drop_table("dp_runs")
    op.drop_table("item_embeddings")
