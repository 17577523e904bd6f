"""A global tenant may name a fallback region: non-personal serving during a home outage.

Revision ID: c0005
Revises: c0004
"""

import sqlalchemy as sa
from alembic import op

revision = "c0005"
down_revision = "c0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("fallback_region", sa.String(8), nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "fallback_region")
