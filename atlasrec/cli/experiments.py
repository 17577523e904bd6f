"""`atlasrec experiments ...`: A/B and interleaving experiments (`atlasrec.experiments`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from atlasrec.cli.options import JsonOpt, TenantOpt, actor, group, open_platform
from atlasrec.cli.output import print_json
from atlasrec.errors import InvalidInputError
from atlasrec.experiment_analysis import analyse
from atlasrec.experiments import create as create_experiment
from atlasrec.experiments import status as experiment_status
from atlasrec.experiments import stop as stop_experiment

app = group("A/B and interleaving experiments on a tenant's traffic.")


@app.command("create")
def create(
    tenant: TenantOpt,
    arms: Annotated[str, typer.Option("--arms", help="Model versions A,B[,C...]; A: control")],
    kind: Annotated[str, typer.Option("--type", help="ab or interleave")],
    metric: Annotated[str, typer.Option("--metric", help="ctr or conversion")] = "ctr",
    split: Annotated[
        str | None, typer.Option("--split", help="Percent of users per arm (A/B), e.g. 50,50")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start an experiment: users split across the arms (ab), or both arms in every list."""
    created = create_experiment(
        open_platform(),
        tenant,
        arms=[a.strip() for a in arms.split(",") if a.strip()],
        kind=kind,
        metric=metric,
        split=None if split is None else _split(tenant, split),
        actor=actor(),
    )
    if as_json:
        print_json(created)
        return
    typer.echo(f"tenant {tenant}: experiment {created['id']} ({kind}, {metric}) running")
    _arms(created)


def _split(tenant: str, text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise InvalidInputError(
            f"tenant {tenant!r}: --split {text!r}: comma-separated percentages, one per arm"
        ) from None


def _arms(experiment: dict[str, Any]) -> None:
    for (name, version), share in zip(experiment["arms"].items(), experiment["split"], strict=True):
        typer.echo(f"  arm {name}: {version}  ({share:g}%)")


@app.command("status")
def status(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """The tenant's experiments, newest first, with their last analysis and decision."""
    built = experiment_status(open_platform(), tenant, actor=actor())
    if as_json:
        print_json(built)
        return
    if not built["experiments"]:
        typer.echo(f"tenant {tenant}: no experiments")
    for e in built["experiments"]:
        why = f": {e['reason']}" if e["reason"] else ""
        typer.echo(f"{e['id']}  {e['type']:<10} {e['metric']:<10} {e['state']}{why}")
        _arms(e)


@app.command("stop")
def stop(
    tenant: TenantOpt,
    experiment_id: Annotated[str, typer.Option("--id", help="The experiment's id")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (kept in the ledger)")
    ] = "stopped by an operator",
) -> None:
    """Stop a running experiment: its users return to the live model."""
    print_json(
        stop_experiment(open_platform(), tenant, experiment_id, reason=reason, actor=actor())
    )


@app.command("check")
def check(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Run the analysis of the running experiment once (beat runs it too)."""
    decision = analyse(open_platform(), tenant)
    if as_json:
        print_json(asdict(decision))
        return
    typer.echo(f"tenant {tenant}: {decision.decision}: {decision.reason}")
