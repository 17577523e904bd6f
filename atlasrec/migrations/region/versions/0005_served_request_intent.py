"""Served requests record the intent they were served with (`atlasrec.intents`).

Revision ID: r0005
Revises: r0004
"""

import sqlalchemy as sa
from alembic import op

revision = "r0005"
down_revision = "r0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # rows logged before intents existed were all served the `next` order
    op.add_column(
        "served_requests",
        sa.Column("intent", sa.String(16), nullable=False, server_default="next"),
    )


def downgrade() -> None:
    op.drop_column("served_requests", "intent")
