"""How commands print: JSON for machines, lines for people."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import typer


def print_json(value: Any) -> None:
    """Print `value` as indented JSON (dates and the like as strings)."""
    typer.echo(json.dumps(value, indent=2, default=str))


def print_lines(lines: Iterable[str]) -> None:
    """Print each line."""
    for line in lines:
        typer.echo(line)
