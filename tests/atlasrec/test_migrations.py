"""The Alembic migrations produce exactly the schema the models declare."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from atlasrec.control.tables import ControlModel
from atlasrec.dataplane.tables import RegionModel
from atlasrec.db import make_engine
from atlasrec.migrations import VERSION_TABLES, upgrade
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from tests.conftest import _pg_admin, _pg_url


def _diff(engine, metadata, schema):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLES[schema], "compare_type": False}
        )
        return [
            d
            for d in compare_metadata(ctx, metadata)
            if not (d[0] == "remove_table" and d[1].name.startswith("alembic_version"))
        ]


def test_migrations_match_models(platform: Platform) -> None:
    assert _diff(platform.control.engine, ControlModel.metadata, "control") == []
    plane = platform.plane(Region.EU)
    assert _diff(plane.engine, RegionModel.metadata, "region") == []


def test_upgrade_is_idempotent(platform: Platform) -> None:
    plane = platform.plane(Region.EU)
    assert upgrade(plane.engine, "region") is False
    assert upgrade(platform.control.engine, "control") is False


@pytest.mark.postgres
def test_processes_upgrading_at_once_apply_each_revision_once() -> None:
    """Two serving processes starting after a release race to migrate: one applies, none fails."""
    name = f"atlasrec_mig_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as admin:
        admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    engines = [make_engine(_pg_url(name), lock_wait_s=20) for _ in range(4)]  # never hangs
    try:
        with ThreadPoolExecutor(4) as pool:
            applied = list(pool.map(lambda e: upgrade(e, "region"), engines))
        assert applied.count(True) == 1
    finally:
        for engine in engines:
            engine.dispose()
        with _pg_admin() as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")  # type: ignore[arg-type]
