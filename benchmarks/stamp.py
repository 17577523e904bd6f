"""When and where a benchmark ran: the date, the machine (CPU, cores, OS), package versions."""

from __future__ import annotations

import os
import platform as host
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import version


def now() -> str:
    """The current UTC time, to the second (ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine() -> str:
    """The CPU architecture, core count and platform string of this machine."""
    return f"{host.machine()} {os.cpu_count()} cores, {host.platform()}"


def stamp() -> dict[str, str]:
    """`date` and `machine`, the first keys of every benchmark's results."""
    return {"date": now(), "machine": machine()}


def versions(packages: Iterable[str]) -> dict[str, str]:
    """The installed version of each package."""
    return {name: version(name) for name in packages}
