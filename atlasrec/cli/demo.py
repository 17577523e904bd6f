"""`atlasrec demo`: the platform end to end on the MovieLens tenant mix."""

from __future__ import annotations

from typing import Annotated

import typer

from atlasrec.cli.options import actor, commands
from demos.run import run_demo

app = commands()


@app.command()
def demo(
    fresh: Annotated[bool, typer.Option("--fresh", help="Start from an empty data folder")] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep the regional servers running at the end")
    ] = False,
) -> None:
    """The platform end to end on the MovieLens tenant mix: ingest, train, serve, audit."""
    run_demo(fresh=fresh, actor=actor(), keep_serving=serve)
