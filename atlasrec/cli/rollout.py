"""`atlasrec rollout ...`: a tenant's model releases (`atlasrec.releases`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from atlasrec.cli.options import JsonOpt, TenantOpt, actor, group, open_platform
from atlasrec.cli.output import print_json
from atlasrec.errors import InvalidInputError
from atlasrec.outcomes import METRICS
from atlasrec.releases import DEFAULT_MIN_REQUESTS, DEFAULT_STEPS
from atlasrec.releases import promote as promote_release
from atlasrec.releases import rollback as rollback_release
from atlasrec.releases import start as start_release
from atlasrec.releases import status as release_status
from atlasrec.rollout_analysis import analyse

app = group("A tenant's model releases: candidates, the live version, promotion and rollback.")

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the ledger)")]


@app.command("status")
def status(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Every model version's state, the live one and the last decision."""
    built = release_status(open_platform(), tenant, actor=actor())
    if as_json:
        print_json(built)
        return
    arms = built["shares"]
    typer.echo(
        f"tenant {built['tenant']} ({built['region']}): live {built['live'] or 'none'}; "
        f"traffic live {arms['live']:g}%, canary {arms['canary']:g}%, shadow {arms['shadow']:g}%"
    )
    for r in built["releases"]:
        why = f"  ({r['reason']})" if r["reason"] else ""
        typer.echo(f"  {r['version']}  {r['state']:<11} since {r['updated_at'][:19]}{why}")
    last = built["last_decision"]
    if last is not None:
        typer.echo(f"last decision: {last['action']} at {last['at'][:19]}")


@app.command("start")
def start(
    tenant: TenantOpt,
    version: Annotated[
        str | None, typer.Option("--version", help="This candidate (default: the newest)")
    ] = None,
    shadow: Annotated[
        float, typer.Option("--shadow", help="Percent of live requests also scored in shadow")
    ] = 0.0,
    canary_steps: Annotated[
        str, typer.Option("--canary-steps", help="Rising traffic percentages of the canary")
    ] = ",".join(map(str, DEFAULT_STEPS)),
    min_requests: Annotated[
        int, typer.Option("--min-requests", help="Requests per arm before a step is decided")
    ] = DEFAULT_MIN_REQUESTS,
    as_json: JsonOpt = False,
) -> None:
    """Start a candidate's rollout: shadow (with --shadow), then stepped canary traffic."""
    started = start_release(
        open_platform(),
        tenant,
        actor=actor(),
        version=version,
        shadow_percent=shadow,
        canary_steps=_steps(tenant, canary_steps),
        min_requests=min_requests,
    )
    if as_json:
        print_json(started)
        return
    plan = started["plan"]
    typer.echo(
        f"tenant {tenant}: {started['version']} in {started['state']} (shadow "
        f"{plan['shadow_percent']:g}%, canary steps {plan['canary_steps']})"
    )


def _steps(tenant: str, text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise InvalidInputError(
            f"tenant {tenant!r}: --canary-steps {text!r}: comma-separated whole percentages"
        ) from None


@app.command("check")
def check(
    tenant: TenantOpt,
    metric: Annotated[str, typer.Option("--metric", help="ctr or conversion")] = "ctr",
    as_json: JsonOpt = False,
) -> None:
    """Run the automatic analysis of the release in flight once (beat runs it too)."""
    if metric not in METRICS:
        raise InvalidInputError(f"--metric {metric!r}: one of {', '.join(METRICS)}")
    decision = analyse(open_platform(), tenant, metric=metric)
    if as_json:
        print_json(asdict(decision))
        return
    typer.echo(f"tenant {tenant}: {decision.decision}: {decision.reason}")


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
