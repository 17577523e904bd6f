"""The control plane service: tenants, API keys and ledger anchors."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from atlasrec.clock import utcnow
from atlasrec.control.cap_requests import mark_approved
from atlasrec.control.endpoints import parse_endpoint
from atlasrec.control.tables import ApiKey, LedgerAnchor, RegionRow, Tenant
from atlasrec.errors import InvalidInputError, TenantExistsError, UnknownTenantError
from atlasrec.event_types import check_types
from atlasrec.kdf import derive_key
from atlasrec.migrations import upgrade
from atlasrec.tenancy import Region, SharingPolicy, validate_tenant_id

MAX_EPSILON_CAP = 1000.0
"""The largest epsilon any setting may allow (`Settings.max_epsilon_cap` is at most this)."""
API_KEY_PREFIX = "ark"


@dataclass(frozen=True)
class IssuedKey:
    """A newly issued API key: `api_key` is shown once and never stored."""

    key_id: str
    tenant_id: str
    api_key: str


def key_id_of(api_key: str) -> str | None:
    """The public id part of an API key (`ark_<key id>_<secret>`), or None if malformed."""
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        return None
    return parts[1]


def check_fallback(tenant: Tenant, region: Region) -> None:
    """Refuse a fallback region a tenant may not have (`InvalidInputError`, one line)."""
    sharing = SharingPolicy(tenant.sharing)
    if sharing != SharingPolicy.GLOBAL:
        raise InvalidInputError(
            f"tenant {tenant.id!r} shares {sharing.value!r}: its serving stays in its home "
            f"region (fail-closed); only a 'global' tenant may have a fallback region"
        )
    if region == Region(tenant.home_region):
        raise InvalidInputError(
            f"tenant {tenant.id!r}: the fallback region must differ from its home region "
            f"{region.value!r}"
        )


class CapAboveMaximumError(InvalidInputError):
    """An epsilon cap above the platform's maximum (`Settings.max_epsilon_cap`)."""


def check_cap(tenant_id: str, cap: float, maximum: float, *, field: str = "cap") -> float:
    """`cap` if it is a number in (0, `maximum`]; else an error naming the tenant and field."""
    if not cap > 0:  # NaN fails too
        raise InvalidInputError(f"tenant {tenant_id!r}: field {field!r} must be a number > 0")
    if not cap <= maximum:
        raise CapAboveMaximumError(
            f"tenant {tenant_id!r}: field {field!r} is {cap:g}, above the platform's maximum "
            f"epsilon cap {maximum:g} (ATLASREC_MAX_EPSILON_CAP)"
        )
    return cap


class ControlPlane:
    """Tenant registry and API keys. Holds no user-level data."""

    def __init__(
        self, engine: Engine, secret: bytes, *, max_epsilon_cap: float = MAX_EPSILON_CAP
    ) -> None:
        self.engine = engine
        self.max_epsilon_cap = max_epsilon_cap
        self._pepper = derive_key(secret, "atlasrec/api-key-hash")
        self._homes: dict[str, Region] = {}

    def migrate(self) -> None:
        """Bring the control-plane schema up to date."""
        upgrade(self.engine, "control")

    # Tenants ------------------------------------------------------------------------------

    def create_tenant(
        self,
        tenant_id: str,
        *,
        region: Region,
        sharing: SharingPolicy,
        name: str | None = None,
        epsilon_cap: float | None = None,
        delta: float | None = None,
    ) -> tuple[Tenant, IssuedKey]:
        """Register a tenant and issue its first API key, in one transaction."""
        validate_tenant_id(tenant_id)
        tenant = Tenant(id=tenant_id, name=name or tenant_id, home_region=region, sharing=sharing)
        if epsilon_cap is not None:
            tenant.epsilon_cap = check_cap(
                tenant_id, epsilon_cap, self.max_epsilon_cap, field="--epsilon"
            )
        else:  # the default cap, unless the platform's maximum is lower
            tenant.epsilon_cap = min(tenant.epsilon_cap, self.max_epsilon_cap)
        if delta is not None:
            if not 0 < delta < 1:
                raise InvalidInputError(f"tenant {tenant_id!r}: --delta must be in (0, 1)")
            tenant.delta = delta
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                if session.get(Tenant, tenant_id) is not None:
                    raise TenantExistsError(tenant_id)
                session.add(tenant)
                session.flush()
                issued = self._issue(session, tenant_id, label="initial")
        except IntegrityError:
            raise TenantExistsError(tenant_id) from None
        return tenant, issued

    def get_tenant(self, tenant_id: str) -> Tenant:
        """The tenant, or UnknownTenantError."""
        with Session(self.engine, expire_on_commit=False) as session:
            tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise UnknownTenantError(tenant_id)
        return tenant

    def list_tenants(self, region: Region | None = None) -> list[Tenant]:
        """All tenants, or those homed in `region`, by id."""
        query = select(Tenant).order_by(col(Tenant.id))
        if region is not None:
            query = query.where(Tenant.home_region == region)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(query).all())

    def set_epsilon_cap(
        self,
        tenant_id: str,
        *,
        expected: float,
        new: float,
        approving: tuple[str, str] | None = None,
    ) -> bool:
        """Set a tenant's cap if it still is `expected` (compare-and-set); whether it was set.

        With `approving` (a pending raise request's id, and the approving officer), the
        request is marked approved in the same transaction: both apply, or neither.
        """
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                update(Tenant)
                .where(col(Tenant.id) == tenant_id, col(Tenant.epsilon_cap) == expected)
                .values(epsilon_cap=new)
            )
            applied = bool(result.rowcount == 1)  # type: ignore[attr-defined]
            if applied and approving is not None:
                applied = mark_approved(session, approving[0], tenant_id, approving[1])
            if not applied:
                session.rollback()
            return applied

    def set_fallback_region(self, tenant_id: str, region: Region | None) -> Tenant:
        """Name (or clear, None) a global tenant's fallback region; the updated tenant."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            tenant = session.get(Tenant, tenant_id, with_for_update=True)
            if tenant is None:
                raise UnknownTenantError(tenant_id)
            if region is not None:
                check_fallback(tenant, region)
            tenant.fallback_region = region
        return tenant

    def set_event_types(self, tenant_id: str, types: dict[str, float] | None) -> Tenant:
        """Replace (or clear, None) the tenant's own event types; the updated tenant."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            tenant = session.get(Tenant, tenant_id, with_for_update=True)
            if tenant is None:
                raise UnknownTenantError(tenant_id)
            tenant.event_types = None if types is None else check_types(tenant_id, types)
        return tenant

    def fallback_region_of(self, tenant_id: str) -> Region | None:
        """The tenant's fallback region now (read each time: it may be switched off)."""
        with Session(self.engine) as session:
            tenant = session.get(Tenant, tenant_id)
        return (
            None
            if tenant is None or tenant.fallback_region is None
            else Region(tenant.fallback_region)
        )

    def home_region_of(self, tenant_id: str) -> Region | None:
        """A tenant's home region (cached: it never changes), or None if unknown."""
        if tenant_id not in self._homes:
            with Session(self.engine) as session:
                tenant = session.get(Tenant, tenant_id)
            if tenant is None:
                return None
            self._homes[tenant_id] = Region(tenant.home_region)
        return self._homes[tenant_id]

    # Region endpoints ---------------------------------------------------------------------

    def set_region_endpoint(self, region: Region, url: str | None) -> str | None:
        """Register (or clear, None) where `region`'s serving app answers; the stored URL."""
        endpoint = None if url is None else parse_endpoint(url)
        with Session(self.engine) as session, session.begin():
            row = session.get(RegionRow, region.value)
            if row is None:
                raise InvalidInputError(f"unknown region {region.value!r}")
            row.endpoint = endpoint
        return endpoint

    def region_endpoints(self) -> dict[Region, str | None]:
        """Every region's registered serving endpoint (None: not registered)."""
        with Session(self.engine) as session:
            rows = session.exec(select(RegionRow)).all()
            return {Region(r.code): r.endpoint for r in sorted(rows, key=lambda r: r.code)}

    def region_endpoint(self, region: Region) -> str | None:
        """Where `region`'s serving app answers, if registered."""
        return self.region_endpoints().get(region)

    # API keys -----------------------------------------------------------------------------

    def _hash(self, api_key: str) -> str:
        return hmac.new(self._pepper, api_key.encode(), hashlib.sha256).hexdigest()

    def _issue(self, session: Session, tenant_id: str, label: str | None) -> IssuedKey:
        key_id = secrets.token_hex(8)
        api_key = f"{API_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        session.add(
            ApiKey(key_id=key_id, tenant_id=tenant_id, key_hash=self._hash(api_key), label=label)
        )
        return IssuedKey(key_id=key_id, tenant_id=tenant_id, api_key=api_key)

    def issue_api_key(self, tenant_id: str, label: str | None = None) -> IssuedKey:
        """Issue another API key for a tenant."""
        self.get_tenant(tenant_id)
        with Session(self.engine) as session, session.begin():
            return self._issue(session, tenant_id, label)

    def revoke_api_key(self, tenant_id: str, key_id: str) -> None:
        """Revoke one of a tenant's keys; it stops authenticating at once."""
        with Session(self.engine) as session, session.begin():
            key = session.get(ApiKey, key_id)
            if key is None or key.tenant_id != tenant_id:
                raise InvalidInputError(f"tenant {tenant_id!r} has no API key {key_id!r}")
            if key.revoked_at is None:
                key.revoked_at = utcnow()

    def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        """A tenant's keys (ids, labels, dates; hashes stay inside)."""
        query = select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(col(ApiKey.created_at))
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(query).all())

    def authenticate(self, api_key: str) -> Tenant | None:
        """The tenant an API key belongs to, or None for unknown, malformed or revoked keys."""
        key_id = key_id_of(api_key)
        if key_id is None:
            return None
        with Session(self.engine, expire_on_commit=False) as session:
            key = session.get(ApiKey, key_id)
            if key is None or key.revoked_at is not None:
                return None
            if not hmac.compare_digest(key.key_hash, self._hash(api_key)):
                return None
            return session.get(Tenant, key.tenant_id)

    # Ledger anchors -----------------------------------------------------------------------

    def advance_anchor(self, region: Region, seq: int, hash_: str) -> None:
        """Move a region's ledger anchor forward (never back)."""
        for attempt in range(3):
            try:
                with Session(self.engine) as session, session.begin():
                    anchor = session.get(LedgerAnchor, region.value, with_for_update=True)
                    if anchor is None:
                        session.add(LedgerAnchor(region=region.value, seq=seq, hash=hash_))
                    elif seq > anchor.seq:
                        anchor.seq, anchor.hash, anchor.updated_at = seq, hash_, utcnow()
                return
            except IntegrityError:  # another writer created the row first: update it instead
                if attempt == 2:
                    raise

    def anchor_of(self, region: Region) -> tuple[int, str] | None:
        """A region's anchored ledger head."""
        with Session(self.engine) as session:
            anchor = session.get(LedgerAnchor, region.value)
            return (anchor.seq, anchor.hash) if anchor else None
