"""`atlasrec federate`: federated rounds of a region's backbone."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from atlasrec.cli.options import JsonOpt, RegionOpt, actor, commands
from atlasrec.cli.output import print_json, print_lines
from atlasrec.pipelines.federate import federate_region
from atlasrec.tenancy import parse_region
from server.federation import FederationConfig, FederationResult

app = commands()


def _lines(result: FederationResult) -> list[str]:
    verb = "resumed" if result.resumed else "ran"
    lines = [
        f"region {result.region}: {verb} federation {result.run_id}: "
        f"{result.rounds_done}/{result.rounds_planned} rounds, backbone {result.backbone_version}"
    ]
    for entry in result.rounds:
        eps = ", ".join(
            f"{t} standalone ε {p['epsilon']:.3f}" for t, p in entry["participants"].items()
        )
        lines.append(f"  round {entry['round']} ({entry['status']}): {eps or 'no participants'}")
        for tenant, reason in {**entry["refused"], **entry["dropped"], **entry["failed"]}.items():
            lines.append(f"    {tenant}: {reason}")
    return lines


@app.command()
def federate(
    region: RegionOpt,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds to run")] = 1,
    round_epsilon: Annotated[
        float, typer.Option("--round-epsilon", help="Epsilon charged to each participant per round")
    ] = 1.0,
    local_epochs: Annotated[int, typer.Option("--local-epochs")] = 2,
    min_participants: Annotated[int, typer.Option("--min-participants")] = 2,
    no_encrypt: Annotated[
        bool, typer.Option("--no-encrypt", help="Plaintext aggregation (benchmark baseline)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run federated rounds of a region's backbone (resumes an unfinished run)."""
    config = FederationConfig(
        rounds=rounds,
        round_epsilon=round_epsilon,
        local_epochs=local_epochs,
        min_participants=min_participants,
        encrypt=not no_encrypt,
    )
    result = federate_region(parse_region(region), config, actor=actor())
    if as_json:
        print_json(asdict(result))
        return
    print_lines(_lines(result))
