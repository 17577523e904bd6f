"""The release registry: each model version's state (candidate, shadow, canary, live, ...),
a release in flight's plan, and the arm that served each request (live, canary, shadow).

Revision ID: r0009
Revises: r0008
"""

import sqlalchemy as sa
from alembic import context, op

from atlasrec.db import validate_identifier

revision = "r0009"
down_revision = "r0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_releases",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("plan", sa.JSON(), nullable=True),
    )
    # rows logged before releases existed were all served by the live model
    op.add_column(
        "served_requests", sa.Column("arm", sa.String(8), nullable=False, server_default="live")
    )
    op.add_column("served_requests", sa.Column("shadow_of", sa.String(32), nullable=True))
    op.add_column(
        "served_requests",
        sa.Column("policy_violations", sa.Integer(), nullable=False, server_default="0"),
    )
    if op.get_bind().dialect.name == "postgresql":
        role = validate_identifier(context.config.attributes["app_role"])
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON model_releases TO {role}")
        op.execute("ALTER TABLE model_releases ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE model_releases FORCE ROW LEVEL SECURITY")
        op.execute(
            "CREATE POLICY tenant_isolation ON model_releases "
            "USING (tenant_id = current_setting('atlasrec.tenant_id', true)) "
            "WITH CHECK (tenant_id = current_setting('atlasrec.tenant_id', true))"
        )


def downgrade() -> None:
    op.drop_column("served_requests", "policy_violations")
    op.drop_column("served_requests", "shadow_of")
    op.drop_column("served_requests", "arm")
    op.drop_table("model_releases")
