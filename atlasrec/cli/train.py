"""`atlasrec train`: train a tenant's model in its home region."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from atlasrec.cli.options import JsonOpt, TenantOpt, actor, commands, open_platform
from atlasrec.cli.output import print_json
from atlasrec.jobs import train as run_training
from atlasrec.models.training import Progress as ProgressCallback
from atlasrec.pipelines.train import TrainResult

app = commands()

NoBackboneOpt = Annotated[
    bool,
    typer.Option(
        "--no-backbone",
        help=(
            "Start a DP run from fresh towers, not the latest federated backbone "
            "(regional, global; --no-dp runs never use it)"
        ),
    ),
]


@contextmanager
def _progress_bar(tenant: str, show: bool) -> Iterator[ProgressCallback | None]:
    """A transient epoch bar on the terminal (None when not shown)."""
    if not show:
        yield None
        return
    with Progress(
        TextColumn("[bold]training {task.fields[tenant]}"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}  loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("train", total=None, tenant=tenant, loss="-")

        def progress(epoch: int, epochs: int, loss: float) -> None:
            bar.update(task, completed=epoch, total=epochs, loss=f"{loss:.3f}")

        yield progress


def _summary_line(tenant: str, result: TrainResult) -> str:
    lineage: dict[str, Any] = result.lineage
    dp = lineage["dp"]
    privacy = (
        "no DP"
        if dp is None
        else (
            f"DP model ε={dp['epsilon']:.3f} (noise {dp['noise_multiplier']:.3f}, "
            f"{dp['steps']} steps, q={dp['sample_rate']:.3f})"
        )
    )
    parent = lineage.get("parent_backbone")
    start = "fresh towers" if parent is None else f"backbone {parent['domain']}/{parent['version']}"
    return (
        f"{tenant}@{result.region}: model {result.model_version} "
        f"({lineage['users']} users, {lineage['items']} items, {privacy}, "
        f"from {start}, {lineage['train_seconds']}s), {result.release}"
    )


@app.command()
def train(
    tenant: TenantOpt,
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="DP epsilon of this run (default 4)")
    ] = None,
    no_dp: Annotated[bool, typer.Option("--no-dp", help="Train without DP (tenant-local)")] = False,
    no_backbone: NoBackboneOpt = False,
    promote: Annotated[
        bool,
        typer.Option("--promote", help="Go live at once instead of as a release candidate"),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a tenant's model in its home region (user-level DP unless --no-dp).

    A regional or global tenant starts from the latest federated backbone it may use. The
    model is a release candidate (`atlasrec rollout`) unless it is the tenant's first or
    --promote is given: then it goes live at once.
    """
    platform = open_platform()
    local = platform.settings.broker_url is None  # else a Celery task on a region worker
    with _progress_bar(tenant, local and not as_json and sys.stderr.isatty()) as progress:
        result = run_training(
            platform,
            tenant,
            actor=actor(),
            epsilon=epsilon,
            no_dp=no_dp,
            no_backbone=no_backbone,
            progress=progress,
            promote=promote,
        )
    if as_json:
        print_json(
            {
                "tenant_id": result.tenant_id,
                "region": result.region,
                "model_version": result.model_version,
                "release": result.release,
                "lineage": result.lineage,
            }
        )
        return
    typer.echo(_summary_line(tenant, result))
