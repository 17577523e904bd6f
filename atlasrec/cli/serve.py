"""`atlasrec serve`: a region's tenants over HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from atlasrec.cli.options import RegionOpt, commands
from atlasrec.pipelines.serve import serve_region
from atlasrec.tenancy import parse_region

app = commands()


@app.command()
def serve(
    region: RegionOpt,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to bind")] = "127.0.0.1",
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = 1,
) -> None:
    """Serve a region's tenants over HTTP (the process is pinned to that region)."""
    pinned = parse_region(region)

    def announce() -> None:
        typer.echo(f"serving region {pinned.value} on http://{host}:{port} (OpenAPI at /docs)")

    serve_region(pinned, host=host, port=port, workers=workers, on_ready=announce)
