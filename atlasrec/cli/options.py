"""What the command modules share: option types, command groups, the acting user, the platform."""

from __future__ import annotations

import getpass
import socket
from typing import Annotated

import typer

from atlasrec.platform import Platform

RegionOpt = Annotated[str, typer.Option("--region", help="us, eu, in or sg")]
TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant id")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def group(help_text: str) -> typer.Typer:
    """A command group (`atlasrec <group> <command>`): help when called without a command."""
    return typer.Typer(help=help_text, no_args_is_help=True, add_completion=False)


def commands() -> typer.Typer:
    """Holder of top-level commands (`atlasrec <command>`), added to the root one by one."""
    return typer.Typer(add_completion=False)


def actor() -> str:
    """Who is acting, for the audit ledger."""
    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


def open_platform() -> Platform:
    """The platform as the settings (environment) describe it."""
    return Platform()
