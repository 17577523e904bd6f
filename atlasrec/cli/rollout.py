"""`atlasrec rollout ...`: a tenant's model releases (`atlasrec.releases`)."""

from __future__ import annotations

from typing import Annotated

import typer

from atlasrec.cli.options import JsonOpt, TenantOpt, actor, group, open_platform
from atlasrec.cli.output import print_json
from atlasrec.releases import promote as promote_release
from atlasrec.releases import rollback as rollback_release
from atlasrec.releases import status as release_status

app = group("A tenant's model releases: candidates, the live version, promotion and rollback.")

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the ledger)")]


@app.command("status")
def status(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Every model version's state, the live one and the last decision."""
    built = release_status(open_platform(), tenant, actor=actor())
    if as_json:
        print_json(built)
        return
    typer.echo(f"tenant {built['tenant']} ({built['region']}): live {built['live'] or 'none'}")
    for r in built["releases"]:
        why = f"  ({r['reason']})" if r["reason"] else ""
        typer.echo(f"  {r['version']}  {r['state']:<11} since {r['updated_at'][:19]}{why}")
    last = built["last_decision"]
    if last is not None:
        typer.echo(f"last decision: {last['action']} at {last['at'][:19]}")


@app.command("promote")
def promote(
    tenant: TenantOpt,
    reason: ReasonOpt,
    version: Annotated[
        str | None, typer.Option("--version", help="This version (default: the pending one)")
    ] = None,
) -> None:
    """Make the release in flight, or the newest candidate, live at once."""
    print_json(
        promote_release(open_platform(), tenant, reason=reason, actor=actor(), version=version)
    )


@app.command("rollback")
def rollback(tenant: TenantOpt, reason: ReasonOpt) -> None:
    """Stop the release in flight; with none, put the previous live version back."""
    print_json(rollback_release(open_platform(), tenant, reason=reason, actor=actor()))
