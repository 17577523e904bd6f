"""Items record when their content was written by its writer (`written_at`).

`updated_at` is when the row last changed here (what serving's catalog refresh follows);
`written_at` is when the write was accepted, which orders a catalog upsert kept in the log
while the database was down against later writes of the same item
(`atlasrec/deferred_catalog.py`). Null on rows written before: their `updated_at` stands.

Revision ID: r0006
Revises: r0005
"""

import sqlalchemy as sa
from alembic import op

revision = "r0006"
down_revision = "r0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("written_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "written_at")
