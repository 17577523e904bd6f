"""Failed audit UI sign-ins, counted per throttle key by every process.

Revision ID: c0004
Revises: c0003
"""

import sqlalchemy as sa
from alembic import op

revision = "c0004"
down_revision = "c0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signin_failures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
    )
    op.create_index("ix_signin_failures_key", "signin_failures", ["key"])
    op.create_index("ix_signin_failures_at", "signin_failures", ["at"])


def downgrade() -> None:
    op.drop_index("ix_signin_failures_at", "signin_failures")
    op.drop_index("ix_signin_failures_key", "signin_failures")
    op.drop_table("signin_failures")
