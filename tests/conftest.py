"""Shared fixtures: every data-plane test runs on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from atlasrec.db import make_engine
from atlasrec.migrations import upgrade
from atlasrec.platform import Platform
from atlasrec.settings import Settings, get_settings
from atlasrec.tenancy import Region

PG_URL = os.environ.get("ATLASREC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_names = itertools.count()


def _pg_connect(dbname: str | None = None, **options: object) -> psycopg.Connection:
    url = make_url(PG_URL)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        dbname=dbname or url.database,
        autocommit=True,
        connect_timeout=5,
        **options,  # type: ignore[arg-type]
    )


def _pg_admin() -> psycopg.Connection:
    try:
        return _pg_connect()
    except psycopg.OperationalError as exc:  # a clear failure, never a silent skip
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable (scripts/services starts it): {exc}")


def _pg_url(dbname: str) -> str:
    return make_url(PG_URL).set(database=dbname).render_as_string(hide_password=False)


RESET_SQL = {
    "control": "TRUNCATE api_keys, officers, cap_raise_requests, tenants, ledger_anchors; "
    "UPDATE regions SET endpoint = NULL",
    "region": "ALTER TABLE audit_records ENABLE TRIGGER USER; "
    "TRUNCATE items, interactions, ingest_batches, tenant_secrets, audit_records, "
    "item_embeddings, dp_runs, served_requests, federation_runs, audit_record_tenants, "
    "online_metrics, model_releases, experiments",
}


class PgDatabases:
    """Throwaway databases cloned from migrated templates, reset and reused between tests."""

    def __init__(self) -> None:
        self.prefix = f"atlasrec_t{os.getpid()}"
        self.admin = _pg_admin()
        self.templates: dict[str, str] = {}
        for schema in ("control", "region"):
            name = f"{self.prefix}_tpl_{schema}"
            self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            self.admin.execute(f"CREATE DATABASE {name}")
            engine = make_engine(_pg_url(name))
            upgrade(engine, schema)  # type: ignore[arg-type]
            engine.dispose()
            self.templates[schema] = name
        self.free: dict[str, list[str]] = {"control": [], "region": []}
        self.created: list[str] = []

    def lease(self, schema: str) -> str:
        """A clean database of this schema: a returned one, emptied, or a new clone."""
        while self.free[schema]:
            name = self.free[schema].pop()
            if self._reset(schema, name):
                return name
        name = f"{self.prefix}_{schema}_{next(_names)}"
        self.admin.execute(f"CREATE DATABASE {name} TEMPLATE {self.templates[schema]}")  # type: ignore[arg-type]
        self.created.append(name)
        return name

    def release(self, schema: str, name: str) -> None:
        """Return a database to the pool; it is emptied only if it is leased again."""
        self.free[schema].append(name)

    @staticmethod
    def _reset(schema: str, name: str) -> bool:
        """Empty a database past its append-only triggers; False if that failed (not reused)."""
        try:
            with _pg_connect(name) as conn:
                conn.execute("SET lock_timeout = '5s'")
                conn.execute("SET session_replication_role = replica")
                conn.execute(RESET_SQL[schema])  # type: ignore[arg-type]
        except psycopg.Error:
            return False
        return True

    def drop_all(self) -> None:
        self.admin.close()
        names = [*self.created, *self.templates.values()]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(_drop_database, names))


def _drop_database(name: str) -> None:
    with _pg_connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


SettingsFactory = Callable[..., Settings]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    return str(request.param)


def _settings_factory(
    backend: str, home_root: Path, request: pytest.FixtureRequest
) -> SettingsFactory:
    counter = itertools.count()

    def factory(**overrides: object) -> Settings:
        home = home_root / f"home{next(counter)}"
        if backend == "postgres":
            dbs: PgDatabases = request.getfixturevalue("pg_databases")
            leased = [("control", dbs.lease("control"))]
            leased += [("region", dbs.lease("region")) for _ in Region]
            for schema, name in leased:
                request.addfinalizer(lambda s=schema, n=name: dbs.release(s, n))
            overrides.setdefault("control_db_url", _pg_url(leased[0][1]))
            overrides.setdefault(
                "region_db_urls",
                {r: _pg_url(n) for r, (_, n) in zip(Region, leased[1:], strict=True)},
            )
        return Settings(home=home, **overrides)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def make_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> SettingsFactory:
    """Build Settings for the current backend; each call gets fresh databases."""
    return _settings_factory(backend, tmp_path, request)


@pytest.fixture
def pg_settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings on PostgreSQL only (for PostgreSQL-specific guarantees such as RLS)."""
    return _settings_factory("postgres", tmp_path, request)()


@pytest.fixture
def pg_platform(pg_settings: Settings) -> Iterator[Platform]:
    p = Platform(pg_settings)
    yield p
    p.close()


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    p = Platform(settings)
    yield p
    p.close()


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated ATLASREC_HOME for in-process CLI calls (SQLite, embedded)."""
    home = tmp_path / "cli-home"
    for key in list(os.environ):
        if key.startswith("ATLASREC_") and not key.startswith("ATLASREC_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ATLASREC_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
