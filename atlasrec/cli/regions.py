"""`atlasrec regions ...`: the residency regions and where their serving apps answer."""

from __future__ import annotations

from typing import Annotated

import typer

from atlasrec.cli.options import JsonOpt, RegionOpt, group, open_platform
from atlasrec.cli.output import print_json
from atlasrec.tenancy import parse_region

app = group("Residency regions and their serving endpoints (the audit UI's platform view).")


@app.command("set-endpoint")
def set_endpoint(
    region: RegionOpt,
    url: Annotated[str, typer.Option("--url", help="Base URL, e.g. https://eu.example.com")],
) -> None:
    """Register where a region's serving app (and its audit UI) answers."""
    parsed = parse_region(region)
    endpoint = open_platform().control.set_region_endpoint(parsed, url)
    typer.echo(f"region {parsed.value}: {endpoint}")


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List the regions with their registered endpoints."""
    endpoints = open_platform().control.region_endpoints()
    if as_json:
        print_json([{"region": r.value, "endpoint": url} for r, url in endpoints.items()])
        return
    for region, url in endpoints.items():
        typer.echo(f"{region.value:<4} {url or '(no endpoint registered)'}")
