"""A tenant's own interaction event types and their weights (`atlasrec.event_types`).

Revision ID: c0007
Revises: c0006
"""

import sqlalchemy as sa
from alembic import op

revision = "c0007"
down_revision = "c0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("event_types", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "event_types")
