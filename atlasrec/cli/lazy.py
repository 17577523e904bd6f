"""A command group that imports a command's module only when that command runs.

`atlasrec --help` lists every command from one-line summaries kept here; running a command
(or asking for its help) imports its module, so `atlasrec tenants list` does not pay for
torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import click
import typer
from typer.core import TyperGroup


@dataclass(frozen=True)
class Lazy:
    """Where a command lives: a module with a Typer `app`, and its summary for the listing."""

    module: str
    summary: str
    command: str | None = None
    """The command to take from the module's `app`; None: the whole `app` (a group)."""

    def load(self, name: str) -> click.Command:
        """Import the module and build the command named `name`."""
        app: typer.Typer = importlib.import_module(self.module).app
        command = typer.main.get_command(app)
        if self.command is not None and isinstance(command, click.Group):
            command = command.commands[self.command]
        command.name = name
        return command


class LazyGroup(TyperGroup):
    """A Typer group whose commands, listed in `lazy`'s order, load on first use."""

    lazy: ClassVar[Mapping[str, Lazy]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._placeholders: set[str] = set()
        for name, spec in self.lazy.items():  # listed with their summaries, not imported
            self.commands[name] = click.Command(name, short_help=spec.summary)
            self._placeholders.add(name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Load the named command (if lazy and not yet loaded), then resolve as usual."""
        name = args[0] if args else None
        if name in self._placeholders:
            self.commands[name] = self.lazy[name].load(name)
            self._placeholders.discard(name)
        return super().resolve_command(ctx, args)
