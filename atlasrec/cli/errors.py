"""Errors to exit statuses: typed errors become one line on stderr and status 1."""

from __future__ import annotations

import click
import typer
from sqlalchemy.exc import SQLAlchemyError

from atlasrec.errors import AtlasRecError


def run(app: typer.Typer) -> int:
    """Run the command line; its exit status (1 for typed and database errors, 130 aborted)."""
    try:
        code = app(standalone_mode=False)
    except AtlasRecError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        return 130
    except SQLAlchemyError as exc:
        typer.echo(f"error: database failure: {str(exc).splitlines()[0]}", err=True)
        return 1
    return code if isinstance(code, int) else 0
