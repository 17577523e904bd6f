"""Control-plane tables (SQLModel families: Base -> table -> Public)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, String
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from atlasrec.clock import utcnow
from atlasrec.tenancy import Region, SharingPolicy

DEFAULT_EPSILON_CAP = 10.0
DEFAULT_DELTA = 1e-6


class ControlModel(SQLModel, registry=registry()):
    """Base of the control-plane tables (their own metadata, apart from the data plane)."""


class RegionRow(ControlModel, table=True):
    """A residency region and where its serving endpoint lives."""

    __tablename__ = "regions"
    code: str = Field(primary_key=True, max_length=8)
    name: str = Field(max_length=64)
    endpoint: str | None = Field(default=None, max_length=255)


class TenantBase(ControlModel):
    """Fields a tenant is created with."""

    id: str = Field(primary_key=True, max_length=63)
    name: str = Field(max_length=200)
    home_region: Region = Field(sa_type=String(8), foreign_key="regions.code", index=True)
    sharing: SharingPolicy = Field(sa_type=String(16))
    epsilon_cap: float = Field(default=DEFAULT_EPSILON_CAP, gt=0)
    delta: float = Field(default=DEFAULT_DELTA, gt=0, lt=1)


class Tenant(TenantBase, table=True):
    """A tenant of the platform."""

    __tablename__ = "tenants"
    created_at: datetime = Field(default_factory=utcnow)
    fallback_region: Region | None = Field(default=None, sa_type=String(8))
    """A `global` tenant's opt-in region of non-personal fallback serving (`atlasrec.fallback`)."""
    event_types: dict[str, float] | None = Field(default=None, sa_column=Column(JSON))
    """The tenant's own event types and weights, beside the built-in (`atlasrec.event_types`)."""


class ApiKey(ControlModel, table=True):
    """An API key: only its keyed hash is stored; the key itself is shown once."""

    __tablename__ = "api_keys"
    key_id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=63)
    key_hash: str = Field(max_length=64)
    label: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class LedgerAnchor(ControlModel, table=True):
    """The latest known head of each region's audit ledger, kept apart from that ledger.

    It lets `audit verify` notice records deleted from the end of the chain.
    """

    __tablename__ = "ledger_anchors"
    region: str = Field(primary_key=True, max_length=8)
    seq: int
    hash: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow)


class Officer(ControlModel, table=True):
    """A privacy officer who signs in to the audit UI (no user data: a name and a role).

    A `platform` officer sees the tenants homed in `regions`; a `tenant` officer sees only
    `tenant_id`. Only a salted scrypt hash of the password is stored.
    """

    __tablename__ = "officers"
    id: str = Field(primary_key=True, max_length=63)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    regions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    tenant_id: str | None = Field(default=None, foreign_key="tenants.id", index=True, max_length=63)
    password_hash: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow)
    disabled_at: datetime | None = None


class RevokedSession(ControlModel, table=True):
    """An audit UI session ended on the server (sign-out), kept until its cookie expires."""

    __tablename__ = "revoked_sessions"
    session_id: str = Field(primary_key=True, max_length=64)
    officer_id: str = Field(max_length=63)
    expires_at: datetime = Field(index=True)


class SignInFailure(ControlModel, table=True):
    """One failed audit UI sign-in, counted against one throttle key (kept for its window).

    The key is a SHA-256 digest: neither officer ids nor client addresses are stored.
    """

    __tablename__ = "signin_failures"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True, max_length=64)
    at: float = Field(index=True)
    """Seconds since the epoch (wall clock: every process counts in the same time)."""


class CapRaiseRequest(ControlModel, table=True):
    """An officer's request to raise a tenant's epsilon cap, until a second officer decides.

    `status`: pending, then approved or rejected (or superseded by a newer request). Only a
    platform officer authorised for the tenant's home region, other than the requester,
    may decide (`audit.access`); every step is also a record of that region's ledger.
    """

    __tablename__ = "cap_raise_requests"
    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=63)
    cap_then: float
    """The tenant's cap when the raise was requested: approving it needs the cap unchanged."""
    requested_cap: float
    reason: str = Field(max_length=2000)
    requested_by: str = Field(max_length=63)
    requested_at: datetime = Field(default_factory=utcnow)
    status: str = Field(default="pending", max_length=16, index=True)
    decided_by: str | None = Field(default=None, max_length=63)
    decided_at: datetime | None = None
    decision_reason: str | None = Field(default=None, max_length=2000)
