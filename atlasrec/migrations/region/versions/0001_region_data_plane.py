"""Region data plane: catalog, interactions, ingest batches, tenant secrets, audit ledger.

On PostgreSQL, tenant tables get row-level security keyed on the `atlasrec.tenant_id`
setting, and an unprivileged login role that tenant sessions connect as. The audit ledger is
append-only by privilege and by trigger (on SQLite, by trigger).

Revision ID: r0001
Revises:
"""

import sqlalchemy as sa
from alembic import context, op

from atlasrec.db import validate_identifier

revision = "r0001"
down_revision = None
branch_labels = None
depends_on = None

TENANT_TABLES = ("items", "interactions", "ingest_batches", "tenant_secrets")


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("item_id", sa.String(256), primary_key=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("category", sa.String(200), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "interactions",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("user_key", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.String(256), primary_key=True),
        sa.Column("ts", sa.BigInteger(), primary_key=True),
        sa.Column("event", sa.String(32), primary_key=True),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "item_id"],
            ["items.tenant_id", "items.item_id"],
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_interactions_tenant_ts", "interactions", ["tenant_id", "ts"])
    op.create_table(
        "ingest_batches",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("inserted", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_ingest_batches_tenant_id", "ingest_batches", ["tenant_id"])
    op.create_table(
        "tenant_secrets",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("purpose", sa.String(32), primary_key=True),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(63), nullable=True),
        sa.Column("region", sa.String(8), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_index("ix_audit_records_tenant_id", "audit_records", ["tenant_id"])
    op.create_index("ix_audit_records_action", "audit_records", ["action"])
    if op.get_bind().dialect.name == "postgresql":
        _postgres_security(context.config.attributes["app_role"])
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_records_no_{verb.lower()} BEFORE {verb} ON audit_records "
                "BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END"
            )


def _postgres_security(role: str) -> None:
    validate_identifier(role)  # it is interpolated into DDL below
    op.execute(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
            CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
          END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$
        """  # noqa: S608 - role is a validated identifier
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    for table in TENANT_TABLES:
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            "USING (tenant_id = current_setting('atlasrec.tenant_id', true)) "
            "WITH CHECK (tenant_id = current_setting('atlasrec.tenant_id', true))"
        )
    op.execute(f"GRANT SELECT, INSERT ON audit_records TO {role}")
    op.execute(
        """
        CREATE FUNCTION atlasrec_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit_records is append-only'; END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
        "ON audit_records FOR EACH STATEMENT EXECUTE FUNCTION atlasrec_audit_append_only()"
    )


def downgrade() -> None:
    for table in ("audit_records", "tenant_secrets", "ingest_batches", "interactions", "items"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS atlasrec_audit_append_only()")
