"""Tenant and region boundaries: refused, audited, and impossible to read around."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from atlasrec.boundary import REFUSED
from atlasrec.dataplane.repository import TenantData
from atlasrec.dataplane.tables import Item
from atlasrec.errors import CrossRegionError, CrossTenantError, UnknownTenantError
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope
from tests.utils.factories import make_tenant


def add_items(platform: Platform, scope: Scope, ids: list[str]) -> None:
    with platform.plane(scope.region).session(scope, actor="test", action="write") as s:
        for item_id in ids:
            s.add(
                Item(
                    tenant_id=scope.tenant_id, item_id=item_id, title=f"{scope.tenant_id} {item_id}"
                )
            )


def item_ids(platform: Platform, scope: Scope) -> list[tuple[str, str]]:
    with platform.plane(scope.region).session(scope, actor="test", action="read") as s:
        return sorted(s.execute(select(Item.tenant_id, Item.item_id)).all())


def refusals(platform: Platform, region: Region) -> list[dict[str, object]]:
    import json

    return [json.loads(r.details) for r in platform.plane(region).ledger.records(action=REFUSED)]


def seed_two_tenants(platform: Platform) -> tuple[Scope, Scope]:
    a = make_tenant(platform, "tenant-a", Region.EU)
    b = make_tenant(platform, "tenant-b", Region.EU)
    add_items(platform, a, ["x", "y"])
    add_items(platform, b, ["x", "z"])
    return a, b


@pytest.fixture
def two_tenants(platform: Platform) -> tuple[Scope, Scope]:
    return seed_two_tenants(platform)


def test_scope_of_another_region_is_refused_and_audited(platform: Platform) -> None:
    scope = make_tenant(platform, "eu-shop", Region.EU)
    with pytest.raises(CrossRegionError, match="homed in 'eu'"):
        with platform.plane(Region.US).session(scope, actor="test", action="read"):
            pass
    [record] = refusals(platform, Region.US)
    assert record["scope_tenant"] == "eu-shop" and record["attempted"] == "read"
    assert refusals(platform, Region.EU) == []


def test_scope_claiming_a_foreign_home_region_is_refused(platform: Platform) -> None:
    make_tenant(platform, "eu-shop", Region.EU)
    with pytest.raises(CrossRegionError, match="homed in region 'eu', not 'us'"):
        with platform.plane(Region.US).session(
            Scope("eu-shop", Region.US), actor="t", action="write"
        ):
            pass
    assert [r["scope_region"] for r in refusals(platform, Region.US)] == ["us"]


def test_unknown_tenant_is_refused_and_audited(platform: Platform) -> None:
    with pytest.raises(UnknownTenantError):
        with platform.plane(Region.SG).session(Scope("ghost", Region.SG), actor="t", action="read"):
            pass
    assert refusals(platform, Region.SG)[0]["error"] == "UnknownTenantError"


def test_reads_see_only_the_scope_tenant(
    platform: Platform, two_tenants: tuple[Scope, Scope]
) -> None:
    a, _ = two_tenants
    assert item_ids(platform, a) == [("tenant-a", "x"), ("tenant-a", "y")]
    with platform.plane(Region.EU).session(a, actor="t", action="read") as s:
        assert s.get(Item, ("tenant-b", "z")) is None
        assert s.execute(select(func.count()).select_from(Item)).scalar_one() == 2
        explicit = select(Item).where(Item.tenant_id == "tenant-b")  # type: ignore[arg-type]
        assert s.execute(explicit).all() == []


def test_bulk_update_and_delete_touch_only_the_scope_tenant(
    platform: Platform, two_tenants: tuple[Scope, Scope]
) -> None:
    a, b = two_tenants
    with platform.plane(Region.EU).session(a, actor="t", action="write") as s:
        s.execute(update(Item).values(title="changed"))
        s.execute(delete(Item).where(Item.item_id == "x"))  # type: ignore[arg-type]
    assert item_ids(platform, a) == [("tenant-a", "y")]
    with platform.plane(Region.EU).session(b, actor="t", action="read") as s:
        titles = sorted(s.execute(select(Item.title)).scalars())
    assert titles == ["tenant-b x", "tenant-b z"]


def test_writing_another_tenants_rows_is_refused_and_audited(
    platform: Platform, two_tenants: tuple[Scope, Scope]
) -> None:
    a, b = two_tenants
    with pytest.raises(CrossTenantError):
        with platform.plane(Region.EU).session(a, actor="t", action="write") as s:
            s.add(Item(tenant_id="tenant-a", item_id="ok", title="mine"))
            s.add(Item(tenant_id="tenant-b", item_id="evil", title="theirs"))
    assert ("tenant-a", "ok") not in item_ids(platform, a)  # the whole transaction rolled back
    assert item_ids(platform, b) == [("tenant-b", "x"), ("tenant-b", "z")]
    [record] = refusals(platform, Region.EU)
    assert record["target_tenant"] == "tenant-b" and record["error"] == "CrossTenantError"


def test_bulk_insert_of_foreign_rows_is_refused(
    platform: Platform, two_tenants: tuple[Scope, Scope]
) -> None:
    a, _ = two_tenants
    from sqlalchemy import insert

    with pytest.raises(CrossTenantError):
        with platform.plane(Region.EU).session(a, actor="t", action="write") as s:
            s.execute(
                insert(Item),
                [
                    {
                        "tenant_id": "tenant-b",
                        "item_id": "q",
                        "title": "q",
                        "attributes": {},
                        "updated_at": None,
                    }
                ],
            )
    assert len(refusals(platform, Region.EU)) == 1


def test_repository_stamps_the_scope_tenant(
    platform: Platform, two_tenants: tuple[Scope, Scope]
) -> None:
    a, b = two_tenants
    from datetime import UTC, datetime

    with platform.plane(Region.EU).session(a, actor="t", action="write") as s:
        TenantData(s).upsert_items(
            [
                {
                    "item_id": "new",
                    "title": "n",
                    "category": None,
                    "description": None,
                    "attributes": {},
                    "updated_at": datetime.now(UTC),
                }
            ]
        )
    assert ("tenant-a", "new") in item_ids(platform, a)
    assert ("tenant-b", "new") not in item_ids(platform, b)


def test_pinned_process_cannot_open_other_regions(make_settings: Callable[..., Settings]) -> None:
    embedded = Platform(make_settings())
    make_tenant(embedded, "eu-shop", Region.EU)
    pinned = Platform(embedded.settings.model_copy(update={"region": Region.US}))
    try:
        with pytest.raises(CrossRegionError, match="runs in region 'us'"):
            pinned.plane(Region.EU)
        scope = pinned.scope("eu-shop")
        assert scope == Scope("eu-shop", Region.US)
        with pytest.raises(CrossRegionError):
            with pinned.plane(Region.US).session(scope, actor="t", action="ingest"):
                pass
        assert len(refusals(pinned, Region.US)) == 1
    finally:
        pinned.close()
        embedded.close()


# PostgreSQL row-level security: holds even for hand-written SQL -----------------------------


@pytest.fixture
def pg_two_tenants(pg_platform: Platform) -> tuple[Scope, Scope]:
    return seed_two_tenants(pg_platform)


def test_rls_filters_hand_written_selects(
    pg_platform: Platform, pg_two_tenants: tuple[Scope, Scope]
) -> None:
    a, _ = pg_two_tenants
    with pg_platform.plane(Region.EU).session(a, actor="t", action="read") as s:
        rows = s.execute(text("SELECT tenant_id, item_id FROM items ORDER BY item_id")).all()
        leaked = s.execute(
            text("SELECT count(*) FROM items WHERE tenant_id = 'tenant-b'")
        ).scalar_one()
    assert [tuple(r) for r in rows] == [("tenant-a", "x"), ("tenant-a", "y")]
    assert leaked == 0


def test_rls_refuses_hand_written_foreign_insert(
    pg_platform: Platform, pg_two_tenants: tuple[Scope, Scope]
) -> None:
    a, b = pg_two_tenants
    with pytest.raises(DBAPIError, match="row-level security"):
        with pg_platform.plane(Region.EU).session(a, actor="t", action="write") as s:
            s.execute(
                text(
                    "INSERT INTO items (tenant_id, item_id, title, updated_at) "
                    "VALUES ('tenant-b', 'evil', 'x', now())"
                )
            )
    assert item_ids(pg_platform, b) == [("tenant-b", "x"), ("tenant-b", "z")]


def test_rls_fails_closed_without_a_tenant(
    pg_platform: Platform, pg_two_tenants: tuple[Scope, Scope]
) -> None:
    plane = pg_platform.plane(Region.EU)
    with plane.tenant_engine.connect() as conn:
        role = conn.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).one()
        assert tuple(role) == (False, False)
        assert conn.execute(text("SELECT count(*) FROM items")).scalar_one() == 0
        with pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(text("UPDATE audit_records SET actor = 'x'"))


# Property: no sequence of scoped calls reads another tenant's rows or writes outside its region.

TENANTS = {"ta": Region.EU, "tb": Region.EU, "tc": Region.US}
op = st.tuples(
    st.sampled_from(["write", "read", "foreign_write"]),
    st.sampled_from(sorted(TENANTS)),
    st.sampled_from(list(Region)[:2]),  # the region the scope claims / the plane approached
    st.sampled_from(sorted(TENANTS)),  # victim of a foreign write
)


@given(ops=st.lists(op, min_size=1, max_size=12))
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_sequence_of_scoped_calls_crosses_a_boundary(
    make_settings: Callable[..., Settings], ops: list[tuple[str, str, Region, str]]
) -> None:
    platform = Platform(make_settings())
    try:
        for tenant, home in TENANTS.items():
            make_tenant(platform, tenant, home)
        model: dict[str, set[str]] = {t: set() for t in TENANTS}
        expected_refusals = {r: 0 for r in Region}
        for n, (kind, tenant, region, victim) in enumerate(ops):
            scope = Scope(tenant, region)
            allowed = TENANTS[tenant] == region and not (
                kind == "foreign_write" and victim != tenant
            )
            try:
                with platform.plane(region).session(scope, actor="prop", action=kind) as s:
                    if kind == "read":
                        rows = s.execute(select(Item.tenant_id, Item.item_id)).all()
                        assert {t for t, _ in rows} <= {tenant}
                        assert {i for _, i in rows} == model[tenant]
                    else:
                        owner = victim if kind == "foreign_write" else tenant
                        s.add(Item(tenant_id=owner, item_id=f"i{n}", title="t"))
                        s.flush()
                assert allowed
                if kind != "read":
                    model[tenant].add(f"i{n}")
            except (CrossRegionError, CrossTenantError):
                assert not allowed
                expected_refusals[region] += 1
        for region in Region:
            assert (
                len(platform.plane(region).ledger.records(action=REFUSED, limit=None))
                == expected_refusals[region]
            )
            with platform.plane(region).engine.connect() as conn:  # admin view of the region's DB
                owners = {t for (t,) in conn.execute(text("SELECT DISTINCT tenant_id FROM items"))}
            assert owners <= {t for t, home in TENANTS.items() if home == region}
    finally:
        platform.close()
