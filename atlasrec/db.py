"""Database engines for the control plane and the regional data planes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from atlasrec.errors import ConfigError

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


SQLITE_LOCK_WAIT_S = 30.0
"""How long SQLite waits for another writer's lock when no `lock_wait_s` is given."""
PG_CONNECT_TIMEOUT_S = 5
"""How long a new PostgreSQL connection may take (an unreachable server fails, not hangs)."""
LOCK_TIMEOUT_SQLSTATE = "55P03"
"""PostgreSQL's lock_not_available (its `lock_timeout` expired)."""


def make_engine(url: str, *, user: str | None = None, lock_wait_s: float | None = None) -> Engine:
    """Create an engine; for SQLite, enable foreign keys, WAL and a busy timeout.

    `user` overrides the URL's user name (PostgreSQL): tenant sessions connect as the
    unprivileged application role so that row-level security applies to them.
    `lock_wait_s` bounds how long a statement waits for a lock another transaction holds
    (None: SQLite `SQLITE_LOCK_WAIT_S`, PostgreSQL without limit); past it the statement
    fails, and `is_lock_timeout` tells that failure apart.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # SQLAlchemy, not pysqlite, owns transactions (pysqlite would run a transaction's
        # reads outside it); each begins IMMEDIATE so a read-then-write transaction (a budget
        # check, a ledger append) is serialised against other writers.
        timeout = SQLITE_LOCK_WAIT_S if lock_wait_s is None else lock_wait_s
        engine = create_engine(parsed, connect_args={"timeout": timeout, "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"unsupported database {parsed.get_backend_name()!r} in {url!r}")
    if user is not None:
        parsed = parsed.set(username=validate_identifier(user), password=None)
    options: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    if lock_wait_s is not None:
        options["options"] = f"-c lock_timeout={lock_wait_s * 1000:.0f}"
    return create_engine(parsed, pool_pre_ping=True, connect_args=options)


def is_lock_timeout(exc: BaseException) -> bool:
    """Whether a database error is a lock wait that ran out (SQLite busy, PostgreSQL 55P03)."""
    if not isinstance(exc, OperationalError):
        return False
    if getattr(exc.orig, "sqlstate", None) == LOCK_TIMEOUT_SQLSTATE:
        return True
    return "database is locked" in str(exc.orig)


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
