"""`atlasrec officers ...`: privacy officer accounts of the audit UI."""

from __future__ import annotations

from operator import attrgetter
from typing import Annotated, Any

import typer

from atlasrec.cli.options import JsonOpt, actor, group, open_platform
from atlasrec.cli.output import print_json
from atlasrec.control.officers import OfficerRole
from atlasrec.control.tables import Officer
from atlasrec.errors import AtlasRecError
from atlasrec.pipelines.officers import (
    create_officer,
    disable_officer,
    list_officers,
    reset_officer_password,
)
from atlasrec.tenancy import Region, parse_region

app = group("Privacy officer accounts of the audit UI (/audit on each regional server).")

OfficerIdOpt = Annotated[str, typer.Option("--id", help="Officer id")]


_KEYS = ("officer_id", "name", "role", "regions", "tenant_id")
_values = attrgetter("id", "name", "role", "regions", "tenant_id")


def _fields(officer: Officer) -> dict[str, Any]:
    fields = dict(zip(_KEYS, _values(officer), strict=True))
    return {**fields, "disabled": officer.disabled_at is not None}


def _role(value: str) -> OfficerRole:
    try:
        return OfficerRole(value)
    except ValueError:
        raise AtlasRecError(f"unknown role {value!r} (expected platform or tenant)") from None


def _regions(value: str | None) -> list[Region]:
    return [parse_region(r.strip()) for r in value.split(",") if r.strip()] if value else []


@app.command("create")
def create(
    officer_id: Annotated[str, typer.Option("--id", help="Officer id (a-z, 0-9, . _ @ -)")],
    role: Annotated[str, typer.Option("--role", help="platform or tenant")],
    regions: Annotated[
        str | None, typer.Option("--regions", help="platform: regions, e.g. eu,us")
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="tenant: the tenant id")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Display name")] = None,
) -> None:
    """Create an officer; prints JSON with the generated password (shown once)."""
    officer_role, parsed = _role(role), _regions(regions)
    issued = create_officer(
        open_platform(),
        officer_id,
        role=officer_role,
        regions=parsed,
        tenant_id=tenant,
        name=name,
        actor=actor(),
    )
    print_json({**_fields(issued.officer), "password": issued.password})


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List officers (no password hashes)."""
    rows = [_fields(o) for o in list_officers(open_platform())]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        scope = ",".join(r["regions"]) if r["role"] == "platform" else r["tenant_id"]
        typer.echo(
            f"{r['officer_id']:<24} {r['role']:<9} {scope}"
            + ("  (disabled)" if r["disabled"] else "")
        )


@app.command("reset-password")
def reset_password(officer_id: OfficerIdOpt) -> None:
    """Replace an officer's password with a generated one (printed once); sessions end."""
    password = reset_officer_password(open_platform(), officer_id)
    print_json({"officer_id": officer_id, "password": password})


@app.command("disable")
def disable(officer_id: OfficerIdOpt) -> None:
    """Disable an officer: no more sign-ins, and open sessions end."""
    disable_officer(open_platform(), officer_id)
    typer.echo(f"officer {officer_id} disabled")
