"""`atlasrec evaluate` and `atlasrec recommend`: a tenant's model offline, and its lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, cast

import click
import typer

from atlasrec.cli.options import JsonOpt, TenantOpt, actor, commands, open_platform
from atlasrec.cli.output import print_json, print_lines
from atlasrec.errors import AtlasRecError
from atlasrec.intents import INTENTS, Intent
from atlasrec.pipelines.evaluate import evaluate_tenant
from atlasrec.pipelines.recommend import recommend_users

app = commands()


def _evaluation_lines(tenant: str, k: int, report: dict[str, Any]) -> list[str]:
    lines = []
    for name, split in report["splits"].items():
        lines.append(f"{tenant} {name} ({split['tested_users']} users), k={k}:")
        for model, r in split["models"].items():
            lines.append(
                f"  {model:<32} ndcg={r['all']['ndcg']:.4f} recall={r['all']['recall']:.4f} "
                f"map={r['all']['map']:.4f} coverage={r['all']['coverage']:.4f}"
            )
    return lines


@app.command()
def evaluate(
    tenant: TenantOpt,
    k: Annotated[int, typer.Option("--k")] = 10,
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="Also evaluate a DP model at this epsilon")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Offline evaluation against Popularity, EASE and ALS on the same splits."""
    report = evaluate_tenant(open_platform(), tenant, k, actor=actor(), epsilon=epsilon)
    if as_json:
        print_json(report)
        return
    print_lines(_evaluation_lines(tenant, k, report))


def read_user_ids(path: Path) -> list[str]:
    """One user id per non-blank line; an optional `user_id` header is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AtlasRecError(f"cannot read users file {str(path)!r}: {exc}") from None
    ids = [line.strip() for line in lines if line.strip()]
    return ids[1:] if ids and ids[0].lower() == "user_id" else ids


@app.command()
def recommend(
    tenant: TenantOpt,
    users_file: Annotated[
        Path, typer.Option("--users-file", help="One user id per line (optional header user_id)")
    ],
    k: Annotated[int, typer.Option("--k")] = 10,
    intent: Annotated[
        str | None,
        typer.Option(
            "--intent",
            click_type=click.Choice(INTENTS),
            help="next: what each user does next; profile: more for the whole history; "
            "absent: the model's default order (chosen in training on both questions)",
        ),
    ] = None,
) -> None:
    """Recommendations for the users in a file, as JSON lines (seen items excluded)."""
    ids = read_user_ids(users_file)
    cold = 0
    chosen = cast(Intent | None, intent)
    for rec in recommend_users(open_platform(), tenant, ids, k, actor=actor(), intent=chosen):
        cold += rec.cold_start
        typer.echo(json.dumps({"user_id": rec.user_id, "items": rec.items}))
    if cold:
        typer.echo(f"{cold} of {len(ids)} users had no history: cold-start lists", err=True)
