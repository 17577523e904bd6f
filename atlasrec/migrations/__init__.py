"""Alembic migrations of the control plane and of the regional data planes, run in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

Schema = Literal["control", "region"]
MIGRATION_LOCK = 0x61746C6173  # "atlas": the advisory lock key of schema upgrades
VERSION_TABLES: dict[Schema, str] = {
    "control": "alembic_version_control",
    "region": "alembic_version_region",
}


def _config(schema: Schema) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / schema))
    cfg.attributes["version_table"] = VERSION_TABLES[schema]
    return cfg


def upgrade(engine: Engine, schema: Schema, *, app_role: str = "atlasrec_app") -> bool:
    """Bring the database to the latest revision; return whether anything was applied.

    Processes starting together (two serving processes after a release) are serialised: on
    PostgreSQL by a transaction-level advisory lock taken before the revision is read, on
    SQLite by the write lock every transaction begins with. The second finds the head.
    """
    cfg = _config(schema)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLES[schema]})
        if context.get_current_revision() == head:
            return False
        cfg.attributes["connection"] = conn
        cfg.attributes["app_role"] = app_role
        command.upgrade(cfg, "head")
    return True
