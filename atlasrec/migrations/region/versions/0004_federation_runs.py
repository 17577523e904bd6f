"""Federation runs of the region's aggregator: progress, so a restarted run resumes.

Revision ID: r0004
Revises: r0003
"""

import sqlalchemy as sa
from alembic import op

revision = "r0004"
down_revision = "r0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("region", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rounds_planned", sa.Integer(), nullable=False),
        sa.Column("rounds_done", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("backbone_in", sa.String(64), nullable=True),
        sa.Column("backbone_out", sa.String(64), nullable=True),
        sa.Column("rounds", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_federation_runs_status", "federation_runs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_federation_runs_status", "federation_runs")
    op.drop_table("federation_runs")
