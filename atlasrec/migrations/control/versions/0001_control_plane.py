"""Control plane: regions, tenants, API keys, ledger anchors.

Revision ID: c0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "c0001"
down_revision = None
branch_labels = None
depends_on = None

REGIONS = [
    ("us", "United States"),
    ("eu", "European Union"),
    ("in", "India"),
    ("sg", "Singapore"),
]


def upgrade() -> None:
    regions = op.create_table(
        "regions",
        sa.Column("code", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=True),
    )
    op.bulk_insert(regions, [{"code": c, "name": n, "endpoint": None} for c, n in REGIONS])
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("home_region", sa.String(8), sa.ForeignKey("regions.code"), nullable=False),
        sa.Column("sharing", sa.String(16), nullable=False),
        sa.Column("epsilon_cap", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("sharing IN ('solo', 'regional', 'global')", name="ck_tenants_sharing"),
        sa.CheckConstraint("epsilon_cap > 0", name="ck_tenants_epsilon_cap"),
        sa.CheckConstraint("delta > 0 AND delta < 1", name="ck_tenants_delta"),
    )
    op.create_index("ix_tenants_home_region", "tenants", ["home_region"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_table(
        "ledger_anchors",
        sa.Column("region", sa.String(8), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_anchors")
    op.drop_index("ix_api_keys_tenant_id", "api_keys")
    op.drop_table("api_keys")
    op.drop_index("ix_tenants_home_region", "tenants")
    op.drop_table("tenants")
    op.drop_table("regions")
