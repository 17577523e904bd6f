"""`atlasrec ingest`: load a tenant's catalog and interactions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atlasrec.cli.options import JsonOpt, TenantOpt, actor, commands, open_platform
from atlasrec.cli.output import print_json, print_lines
from atlasrec.errors import AtlasRecError
from atlasrec.ingest import IngestReport
from atlasrec.pipelines.ingest import ingest_tenant

app = commands()


def _lines(report: IngestReport) -> list[str]:
    lines = []
    for file in (report.items, report.interactions):
        if file is not None:
            state = (
                "already ingested, skipped"
                if file.already_ingested
                else f"{file.rows} rows read, {file.written} written"
            )
            lines.append(f"{report.tenant_id}@{report.region}: {file.file}: {state}")
    return lines


@app.command()
def ingest(
    tenant: TenantOpt,
    items: Annotated[Path | None, typer.Option("--items", help="items.csv")] = None,
    interactions: Annotated[
        Path | None, typer.Option("--interactions", help="interactions.csv")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Load a tenant's catalog and interactions (one transaction; nothing on error)."""
    if items is None and interactions is None:
        raise AtlasRecError("give --items and/or --interactions")
    report = ingest_tenant(
        open_platform(), tenant, items=items, interactions=interactions, actor=actor()
    )
    if as_json:
        print_json(report.as_dict())
        return
    print_lines(_lines(report))
