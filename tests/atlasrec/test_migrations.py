"""The Alembic migrations produce exactly the schema the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from atlasrec.control.tables import ControlModel
from atlasrec.dataplane.tables import RegionModel
from atlasrec.migrations import VERSION_TABLES, upgrade
from atlasrec.platform import Platform
from atlasrec.tenancy import Region


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
