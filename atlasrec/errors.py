"""Typed errors. Each carries a one-line, user-facing message; the CLI prints it and exits 1."""

from __future__ import annotations


class AtlasRecError(Exception):
    """Base class for every error the platform reports to its users."""


class RefusedError(AtlasRecError):
    """Something was refused for lack of authority (the refusal is audited where raised)."""


class NotFoundError(AtlasRecError):
    """What was asked for does not exist."""


class ConflictError(AtlasRecError):
    """The state changed since the caller looked at it; reload and retry."""


class UnavailableError(AtlasRecError):
    """A service the operation needs is down or too slow; retrying later may succeed."""


class ConfigError(AtlasRecError):
    """The settings are invalid or unsafe for the configured environment."""


class UnknownTenantError(NotFoundError):
    """No tenant with this id exists in the control plane."""

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"unknown tenant {tenant_id!r}")
        self.tenant_id = tenant_id


class TenantExistsError(AtlasRecError):
    """A tenant with this id already exists."""

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant {tenant_id!r} already exists")
        self.tenant_id = tenant_id


class InvalidInputError(AtlasRecError):
    """A value given by a user is malformed (bad id, out-of-range number, ...)."""


class BoundaryViolation(RefusedError):
    """An access tried to cross a tenant or region boundary. Always audited."""


class CrossTenantError(BoundaryViolation):
    """A scope for one tenant tried to touch another tenant's data."""


class CrossRegionError(BoundaryViolation):
    """A scope tried to read or write outside its tenant's home region."""


class IngestError(AtlasRecError):
    """A CSV file was rejected; nothing of it was written."""

    def __init__(
        self, file: str, line: int | None, field: str | None, reason: str, tenant_id: str
    ) -> None:
        where = f"{file}" + (f" line {line}" if line is not None else "")
        what = f"field {field!r}: " if field else ""
        super().__init__(f"tenant {tenant_id!r}: {where}: {what}{reason}")
        self.file, self.line, self.field, self.reason = file, line, field, reason
        self.tenant_id = tenant_id


class NotYetAvailableError(AtlasRecError):
    """A contract command whose capability is not built yet."""
