"""`atlasrec tenants ...`: register tenants and manage their API keys."""

from __future__ import annotations

from operator import attrgetter
from typing import Annotated, Any

import typer

from atlasrec.cli.options import JsonOpt, RegionOpt, TenantOpt, actor, group, open_platform
from atlasrec.cli.output import print_json
from atlasrec.control.tables import Tenant
from atlasrec.errors import AtlasRecError
from atlasrec.event_types import parse_types
from atlasrec.fallback import publish_copy, set_fallback
from atlasrec.pipelines.tenants import (
    event_types_of,
    issue_api_key,
    revoke_api_key,
    set_event_types,
)
from atlasrec.tenancy import SharingPolicy, parse_region

app = group("Register tenants and manage their API keys.")


_KEYS = ("tenant_id", "name", "region", "sharing", "epsilon_cap", "delta")
_values = attrgetter("id", "name", "home_region", "sharing", "epsilon_cap", "delta")


def _fields(tenant: Tenant) -> dict[str, Any]:
    return dict(zip(_KEYS, _values(tenant), strict=True))


def _sharing(value: str) -> SharingPolicy:
    try:
        return SharingPolicy(value)
    except ValueError:
        raise AtlasRecError(
            f"unknown sharing policy {value!r} (expected solo, regional or global)"
        ) from None


@app.command("create")
def create(
    tenant_id: Annotated[str, typer.Option("--id", help="Tenant id (a-z, 0-9, '-', '_')")],
    region: RegionOpt,
    sharing: Annotated[str, typer.Option("--sharing", help="solo, regional or global")],
    epsilon: Annotated[float | None, typer.Option("--epsilon", help="DP epsilon cap")] = None,
    delta: Annotated[float | None, typer.Option("--delta", help="DP delta")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Display name")] = None,
) -> None:
    """Register a tenant; prints JSON with its API key (shown once, only a hash is kept)."""
    policy = _sharing(sharing)
    tenant, issued = open_platform().create_tenant(
        tenant_id,
        region=parse_region(region),
        sharing=policy,
        actor=actor(),
        name=name,
        epsilon_cap=epsilon,
        delta=delta,
    )
    print_json({**_fields(tenant), "api_key_id": issued.key_id, "api_key": issued.api_key})


@app.command("list")
def list_(
    region: Annotated[str | None, typer.Option("--region", help="Only this region")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List tenants (no secrets)."""
    tenants = open_platform().control.list_tenants(parse_region(region) if region else None)
    rows = [_fields(t) for t in tenants]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        typer.echo(
            f"{r['tenant_id']:<24} {r['region']:<3} {r['sharing']:<9} eps_cap={r['epsilon_cap']}"
        )


@app.command("fallback")
def fallback(
    tenant: TenantOpt,
    region: Annotated[
        str | None, typer.Option("--region", help="The fallback region (a global tenant only)")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="No fallback region any more")] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Publish a new catalog copy to its fallback region")
    ] = False,
) -> None:
    """Name a global tenant's fallback region (non-personal serving while its home is out)."""
    if sum((region is not None, off, refresh)) != 1:
        raise AtlasRecError("give exactly one of --region R, --off or --refresh")
    platform = open_platform()
    if refresh:
        print_json(publish_copy(platform, tenant, actor=actor()))
        return
    chosen = None if region is None else parse_region(region)
    print_json(set_fallback(platform, tenant, chosen, actor=actor()))


@app.command("event-types")
def event_types(
    tenant: TenantOpt,
    set_: Annotated[
        str | None,
        typer.Option("--set", help="The tenant's own types: name=weight,name=weight"),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Only the built-in types")] = False,
) -> None:
    """Show, replace (--set) or clear the tenant's own event types and their weights."""
    if set_ is not None and clear:
        raise AtlasRecError("give --set or --clear, not both")
    platform = open_platform()
    if set_ is None and not clear:
        print_json(event_types_of(tenant, platform.control.get_tenant(tenant).event_types))
        return
    types = None if clear else parse_types(tenant, set_ or "")
    print_json(set_event_types(platform, tenant, types, actor=actor()))


@app.command("new-key")
def new_key(
    tenant: TenantOpt,
    label: Annotated[str | None, typer.Option("--label")] = None,
) -> None:
    """Issue another API key (printed once)."""
    issued = issue_api_key(open_platform(), tenant, label, actor=actor())
    print_json({"tenant_id": tenant, "api_key_id": issued.key_id, "api_key": issued.api_key})


@app.command("revoke-key")
def revoke_key(
    tenant: TenantOpt,
    key_id: Annotated[str, typer.Option("--key-id")],
) -> None:
    """Revoke an API key; it stops authenticating at once."""
    revoke_api_key(open_platform(), tenant, key_id, actor=actor())
    typer.echo(f"revoked API key {key_id} of tenant {tenant}")
