"""Experiments (A/B and interleaving) on a tenant's traffic, and the experiment, arm and
interleaved teams of each served request.

Revision ID: r0010
Revises: r0009
"""

import sqlalchemy as sa
from alembic import context, op

from atlasrec.db import validate_identifier

revision = "r0010"
down_revision = "r0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("arms", sa.JSON(), nullable=False),
        sa.Column("split", sa.JSON(), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
    )
    op.add_column("served_requests", sa.Column("experiment_id", sa.String(16), nullable=True))
    op.add_column("served_requests", sa.Column("teams", sa.String(100), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        role = validate_identifier(context.config.attributes["app_role"])
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON experiments TO {role}")
        op.execute("ALTER TABLE experiments ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE experiments FORCE ROW LEVEL SECURITY")
        op.execute(
            "CREATE POLICY tenant_isolation ON experiments "
            "USING (tenant_id = current_setting('atlasrec.tenant_id', true)) "
            "WITH CHECK (tenant_id = current_setting('atlasrec.tenant_id', true))"
        )


def downgrade() -> None:
    op.drop_column("served_requests", "teams")
    op.drop_column("served_requests", "experiment_id")
    op.drop_table("experiments")
