"""Shared fixtures: every data-plane test runs on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
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


def _pg_admin() -> psycopg.Connection:
    url = make_url(PG_URL)
    try:
        return psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            dbname=url.database,
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:  # a clear failure, never a silent skip
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable (scripts/services starts it): {exc}")


def _pg_url(dbname: str) -> str:
    return make_url(PG_URL).set(database=dbname).render_as_string(hide_password=False)


class PgDatabases:
    """Throwaway databases cloned from migrated templates (fast: CREATE ... TEMPLATE)."""

    def __init__(self) -> None:
        self.prefix = f"atlasrec_t{os.getpid()}"
        self.admin = _pg_admin()
        self.templates = {}
        for schema in ("control", "region"):
            name = f"{self.prefix}_tpl_{schema}"
            self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            self.admin.execute(f"CREATE DATABASE {name}")
            engine = make_engine(_pg_url(name))
            upgrade(engine, schema)  # type: ignore[arg-type]
            engine.dispose()
            self.templates[schema] = name
        self.created: list[str] = []

    def clone(self, schema: str) -> str:
        name = f"{self.prefix}_{schema}_{next(_names)}"
        self.admin.execute(f"CREATE DATABASE {name} TEMPLATE {self.templates[schema]}")
        self.created.append(name)
        return _pg_url(name)

    def drop_all(self) -> None:
        for name in [*self.created, *self.templates.values()]:
            self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.admin.close()


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
            overrides.setdefault("control_db_url", dbs.clone("control"))
            overrides.setdefault("region_db_urls", {r: dbs.clone("region") for r in Region})
        return Settings(home=home, **overrides)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def make_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> SettingsFactory:
    """Build Settings for the current backend; each call gets fresh databases."""
    return _settings_factory(backend, tmp_path, request)


@pytest.fixture
def pg_platform(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Platform]:
    """A platform on PostgreSQL only (for PostgreSQL-specific guarantees such as RLS)."""
    p = Platform(_settings_factory("postgres", tmp_path, request)())
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
