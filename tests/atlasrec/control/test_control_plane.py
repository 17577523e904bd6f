"""Control plane: tenants, API keys (hash only, shown once, revocable), ledger anchors."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from atlasrec.control.tables import DEFAULT_EPSILON_CAP
from atlasrec.errors import InvalidInputError, TenantExistsError, UnknownTenantError
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy


def test_create_tenant_stores_policy_and_only_a_key_hash(platform: Platform) -> None:
    tenant, issued = platform.control.create_tenant(
        "acme", region=Region.IN, sharing=SharingPolicy.SOLO, epsilon_cap=4.0, delta=1e-7
    )
    assert (tenant.home_region, tenant.sharing, tenant.epsilon_cap) == ("in", "solo", 4.0)
    with platform.control.engine.connect() as conn:
        stored = " ".join(
            str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row
        )
        assert conn.execute(text("SELECT count(*) FROM tenants")).scalar_one() == 1
    secret_part = issued.api_key.split("_", 2)[2]
    assert secret_part not in stored and issued.api_key not in stored
    assert platform.control.authenticate(issued.api_key).id == "acme"  # type: ignore[union-attr]


def test_defaults(platform: Platform) -> None:
    tenant, _ = platform.control.create_tenant("t1", region=Region.US, sharing=SharingPolicy.GLOBAL)
    assert tenant.epsilon_cap == DEFAULT_EPSILON_CAP and 0 < tenant.delta < 1e-5


def test_revoked_and_forged_keys_do_not_authenticate(platform: Platform) -> None:
    _, first = platform.control.create_tenant(
        "acme", region=Region.EU, sharing=SharingPolicy.REGIONAL
    )
    second = platform.control.issue_api_key("acme", label="ci")
    platform.control.revoke_api_key("acme", first.key_id)
    assert platform.control.authenticate(first.api_key) is None
    assert platform.control.authenticate(second.api_key) is not None
    forged = second.api_key[:-2] + ("AA" if not second.api_key.endswith("AA") else "BB")
    for key in (
        forged,
        "",
        "ark_",
        "ark_x_y",
        "not-a-key",
        second.api_key.replace("ark", "xyz", 1),
    ):
        assert platform.control.authenticate(key) is None
    keys = platform.control.list_api_keys("acme")
    assert [(k.key_id, k.revoked_at is not None) for k in keys] == [
        (first.key_id, True),
        (second.key_id, False),
    ]


def test_revoking_another_tenants_key_is_refused(platform: Platform) -> None:
    _, a = platform.control.create_tenant("a1", region=Region.EU, sharing=SharingPolicy.REGIONAL)
    platform.control.create_tenant("b1", region=Region.EU, sharing=SharingPolicy.REGIONAL)
    with pytest.raises(InvalidInputError, match="has no API key"):
        platform.control.revoke_api_key("b1", a.key_id)
    assert platform.control.authenticate(a.api_key) is not None


def test_duplicate_tenant_is_refused_without_side_effects(platform: Platform) -> None:
    platform.control.create_tenant("acme", region=Region.EU, sharing=SharingPolicy.REGIONAL)
    with pytest.raises(TenantExistsError):
        platform.control.create_tenant("acme", region=Region.US, sharing=SharingPolicy.SOLO)
    assert platform.control.get_tenant("acme").home_region == "eu"
    assert len(platform.control.list_api_keys("acme")) == 1


@pytest.mark.parametrize(
    ("tenant_id", "options", "message"),
    [
        ("Bad Id", {}, "invalid tenant id"),
        ("../etc", {}, "invalid tenant id"),
        ("x", {}, "invalid tenant id"),
        ("ok-id", {"epsilon_cap": 0.0}, "--epsilon"),
        ("ok-id", {"epsilon_cap": -1.0}, "--epsilon"),
        ("ok-id", {"epsilon_cap": float("nan")}, "--epsilon"),
        ("ok-id", {"epsilon_cap": float("inf")}, "--epsilon"),
        ("ok-id", {"epsilon_cap": 1e308}, "--epsilon"),
        ("ok-id", {"delta": 1.0}, "--delta"),
    ],
)
def test_invalid_tenants_are_refused(
    platform: Platform, tenant_id: str, options: dict[str, float], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        platform.control.create_tenant(
            tenant_id, region=Region.EU, sharing=SharingPolicy.SOLO, **options
        )  # type: ignore[arg-type]
    assert platform.control.list_tenants() == []


def test_unknown_tenant(platform: Platform) -> None:
    with pytest.raises(UnknownTenantError):
        platform.control.get_tenant("nobody")
    assert platform.control.home_region_of("nobody") is None


def test_list_by_region(platform: Platform) -> None:
    for tid, region in (("b-eu", Region.EU), ("a-eu", Region.EU), ("c-us", Region.US)):
        platform.control.create_tenant(tid, region=region, sharing=SharingPolicy.REGIONAL)
    assert [t.id for t in platform.control.list_tenants(Region.EU)] == ["a-eu", "b-eu"]
    assert len(platform.control.list_tenants()) == 3


def test_anchor_only_moves_forward(platform: Platform) -> None:
    assert platform.control.anchor_of(Region.EU) is None
    platform.control.advance_anchor(Region.EU, 5, "h5")
    platform.control.advance_anchor(Region.EU, 3, "h3")
    assert platform.control.anchor_of(Region.EU) == (5, "h5")
    platform.control.advance_anchor(Region.EU, 6, "h6")
    assert platform.control.anchor_of(Region.EU) == (6, "h6")
    assert platform.control.anchor_of(Region.US) is None
