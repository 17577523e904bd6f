"""Database engines for the control plane and the regional data planes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from atlasrec.errors import ConfigError

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def make_engine(url: str, *, user: str | None = None) -> Engine:
    """Create an engine; for SQLite, enable foreign keys, WAL and a busy timeout.

    `user` overrides the URL's user name (PostgreSQL): tenant sessions connect as the
    unprivileged application role so that row-level security applies to them.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # SQLAlchemy, not pysqlite, owns transactions (pysqlite would run a transaction's
        # reads outside it); each begins IMMEDIATE so a read-then-write transaction (a budget
        # check, a ledger append) is serialised against other writers.
        engine = create_engine(parsed, connect_args={"timeout": 30, "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"unsupported database {parsed.get_backend_name()!r} in {url!r}")
    if user is not None:
        parsed = parsed.set(username=validate_identifier(user), password=None)
    return create_engine(parsed, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgres(engine: Engine) -> bool:
    """Whether the engine talks to PostgreSQL (row-level security applies)."""
    return engine.dialect.name == "postgresql"


def validate_identifier(name: str) -> str:
    """Return `name` if it is a plain lower-case SQL identifier (used unquoted in DDL)."""
    if not _IDENTIFIER.fullmatch(name):
        raise ConfigError(f"invalid SQL identifier {name!r}")
    return name
