"""Officer accounts: salted scrypt hashes, roles, validation, the command line."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from atlasrec.clock import utcnow
from atlasrec.control.officers import (
    OfficerRole,
    Officers,
    fingerprint,
    hash_password,
    verify_password,
)
from atlasrec.errors import InvalidInputError, UnknownTenantError
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from tests.atlasrec.test_cli import cli
from tests.utils.factories import make_tenant


def test_hashes_are_salted_and_checked() -> None:
    first, second = hash_password("same password"), hash_password("same password")
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert verify_password("same password", first) and verify_password("same password", second)
    assert not verify_password("same passwore", first)
    for stored in ("", "scrypt$x", "bcrypt$1$2$3$4$5", "scrypt$16384$8$1$!!$!!"):
        assert not verify_password("same password", stored)


def test_accounts(platform: Platform) -> None:
    make_tenant(platform, "shop", Region.EU)
    officers = Officers(platform.control.engine)
    platform_officer = officers.create(
        "dpo@atlas", role=OfficerRole.PLATFORM, regions=[Region.US, Region.EU], name="The DPO"
    )
    tenant_officer = officers.create("shop-dpo", role=OfficerRole.TENANT, tenant_id="shop")
    assert platform_officer.officer.regions == ["eu", "us"]
    assert platform_officer.password != tenant_officer.password
    assert platform_officer.password not in platform_officer.officer.password_hash
    assert [o.id for o in officers.list()] == ["dpo@atlas", "shop-dpo"]

    assert officers.authenticate("dpo@atlas", platform_officer.password) is not None
    assert officers.authenticate("dpo@atlas", tenant_officer.password) is None
    assert officers.authenticate("nobody", platform_officer.password) is None
    assert officers.authenticate("../x", "") is None

    before = fingerprint(officers.get("shop-dpo"))  # type: ignore[arg-type]
    new = officers.reset_password("shop-dpo")
    assert officers.authenticate("shop-dpo", tenant_officer.password) is None
    assert officers.authenticate("shop-dpo", new) is not None
    assert fingerprint(officers.get("shop-dpo")) != before  # type: ignore[arg-type]
    officers.disable("shop-dpo")
    assert officers.authenticate("shop-dpo", new) is None


BAD_ACCOUNTS: list[tuple[str, dict[str, object], type[Exception], str]] = [
    ("Bad Id", {"role": OfficerRole.PLATFORM, "regions": [Region.EU]}, InvalidInputError,
     "invalid officer id"),
    ("o1", {"role": OfficerRole.PLATFORM}, InvalidInputError, "needs --regions"),
    ("o1", {"role": OfficerRole.PLATFORM, "regions": [Region.EU], "tenant_id": "shop"},
     InvalidInputError, "not --tenant"),
    ("o1", {"role": OfficerRole.TENANT}, InvalidInputError, "needs --tenant"),
    ("o1", {"role": OfficerRole.TENANT, "tenant_id": "shop", "regions": [Region.EU]},
     InvalidInputError, "not --regions"),
    ("o1", {"role": OfficerRole.TENANT, "tenant_id": "ghost"}, UnknownTenantError,
     "unknown tenant 'ghost'"),
    ("taken", {"role": OfficerRole.PLATFORM, "regions": [Region.EU]}, InvalidInputError,
     "already exists"),
]  # fmt: skip


def test_bad_accounts_are_refused(platform: Platform) -> None:
    make_tenant(platform, "shop", Region.EU)
    officers = Officers(platform.control.engine)
    officers.create("taken", role=OfficerRole.PLATFORM, regions=[Region.EU])
    for officer_id, options, error, message in BAD_ACCOUNTS:
        with pytest.raises(error, match=message):
            officers.create(officer_id, **options)  # type: ignore[arg-type]
    assert [o.id for o in officers.list()] == ["taken"]


def test_the_command_line(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "tenants", "create", "--id", "shop", "--region", "in", "--sharing", "solo")
    code, out, _ = cli(
        capsys, "officers", "create", "--id", "dpo", "--role", "platform", "--regions", "in,sg"
    )
    created = json.loads(out)
    assert code == 0 and created["regions"] == ["in", "sg"] and len(created["password"]) >= 20
    code, out, _ = cli(
        capsys, "officers", "create", "--id", "shop-dpo", "--role", "tenant", "--tenant", "shop"
    )
    assert code == 0 and json.loads(out)["tenant_id"] == "shop"
    code, out, _ = cli(capsys, "officers", "list", "--json")
    assert code == 0 and "password" not in out and "scrypt" not in out
    assert [o["officer_id"] for o in json.loads(out)] == ["dpo", "shop-dpo"]
    code, out, _ = cli(capsys, "audit", "log", "--region", "in", "--action", "officer.")
    assert code == 0 and out.count("officer.created") == 2  # in: the platform and tenant officer
    code, out, _ = cli(capsys, "officers", "reset-password", "--id", "dpo")
    assert code == 0 and json.loads(out)["password"] != created["password"]
    for args, message in (
        (["create", "--id", "x1", "--role", "king"], "unknown role 'king'"),
        (["create", "--id", "x1", "--role", "platform", "--regions", "eu,mars"], "'mars'"),
        (["create", "--id", "x1", "--role", "tenant", "--tenant", "ghost"], "unknown tenant"),
        (["reset-password", "--id", "ghost"], "unknown officer 'ghost'"),
        (["disable", "--id", "ghost"], "unknown officer 'ghost'"),
    ):
        code, _, err = cli(capsys, "officers", *args)
        assert code == 1 and message in err and err.count("\n") == 1


def test_revoked_sessions_are_refused_until_they_would_expire(platform: Platform) -> None:
    officers = Officers(platform.control.engine)
    later = utcnow() + timedelta(hours=1)
    officers.revoke_session("s1", "dpo", later)
    officers.revoke_session("s1", "dpo", later)  # a second sign-out of the same session
    officers.revoke_session("old", "dpo", utcnow() - timedelta(seconds=1))
    assert officers.session_revoked("s1") and officers.session_revoked("old")
    assert not officers.session_revoked("s2")
    officers.revoke_session("s3", "dpo", later)  # prunes the entries past their expiry
    assert not officers.session_revoked("old")
    assert officers.session_revoked("s1") and officers.session_revoked("s3")
