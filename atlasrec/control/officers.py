"""Privacy officers: the accounts of the audit UI, kept in the control plane.

An officer has a display name, a role and a salted scrypt password hash; nothing else. A
`platform` officer is authorised for a list of regions, a `tenant` officer for one tenant.
What an officer may see is decided in one place, `audit.access`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from atlasrec.clock import utcnow
from atlasrec.control.tables import Officer, RevokedSession, Tenant
from atlasrec.errors import AtlasRecError, InvalidInputError, UnknownTenantError
from atlasrec.tenancy import Region

OFFICER_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,62}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32
"""scrypt parameters of new hashes (stored with each hash, so they can be raised later)."""


class OfficerRole(StrEnum):
    """What an officer is authorised for."""

    PLATFORM = "platform"
    TENANT = "tenant"


class UnknownOfficerError(AtlasRecError):
    """No officer with this id exists."""

    def __init__(self, officer_id: str) -> None:
        super().__init__(f"unknown officer {officer_id!r}")


@dataclass(frozen=True)
class IssuedOfficer:
    """A new officer account and its generated password (shown once, never stored)."""

    officer: Officer
    password: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """`scrypt$N$r$p$salt$hash` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_LEN
    )
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (constant-time comparison of the derived keys)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        derived = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(derived, expected)


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
"""Checked against for unknown officers, so a wrong id costs as much time as a wrong password."""


def fingerprint(officer: Officer) -> str:
    """A short digest of the officer's password hash: sessions die when the password changes."""
    return hashlib.sha256(officer.password_hash.encode()).hexdigest()[:16]


def validate_officer_id(officer_id: str) -> str:
    """Return `officer_id` if it is 2-63 characters of a-z, 0-9, '.', '_', '@' and '-'."""
    if not OFFICER_ID_PATTERN.fullmatch(officer_id):
        raise InvalidInputError(
            f"invalid officer id {officer_id!r}: use 2-63 characters of a-z, 0-9, '.', '_', "
            "'@' and '-', starting with a letter or digit"
        )
    return officer_id


class Officers:
    """Officer accounts in the control plane's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        officer_id: str,
        *,
        role: OfficerRole,
        regions: Sequence[Region] = (),
        tenant_id: str | None = None,
        name: str | None = None,
    ) -> IssuedOfficer:
        """Create an account with a generated password (returned once)."""
        validate_officer_id(officer_id)
        if role == OfficerRole.PLATFORM:
            if tenant_id is not None:
                raise InvalidInputError("a platform officer has --regions, not --tenant")
            if not regions:
                raise InvalidInputError("a platform officer needs --regions (e.g. eu,us)")
        elif tenant_id is None:
            raise InvalidInputError("a tenant officer needs --tenant")
        elif regions:
            raise InvalidInputError("a tenant officer has --tenant, not --regions")
        password = secrets.token_urlsafe(18)
        officer = Officer(
            id=officer_id,
            name=name or officer_id,
            role=role.value,
            regions=sorted({r.value for r in regions}),
            tenant_id=tenant_id,
            password_hash=hash_password(password),
        )
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                if tenant_id is not None and session.get(Tenant, tenant_id) is None:
                    raise UnknownTenantError(tenant_id)
                if session.get(Officer, officer_id) is not None:
                    raise InvalidInputError(f"officer {officer_id!r} already exists")
                session.add(officer)
        except IntegrityError:
            raise InvalidInputError(f"officer {officer_id!r} already exists") from None
        return IssuedOfficer(officer, password)

    def revoke_session(self, session_id: str, officer_id: str, expires_at: datetime) -> None:
        """End a session on the server (every process refuses it); prunes expired entries."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(RevokedSession).where(col(RevokedSession.expires_at) < utcnow()))
            if session.get(RevokedSession, session_id) is None:
                session.add(
                    RevokedSession(
                        session_id=session_id, officer_id=officer_id, expires_at=expires_at
                    )
                )

    def session_revoked(self, session_id: str) -> bool:
        """Whether the session was ended on the server."""
        with Session(self.engine) as session:
            return session.get(RevokedSession, session_id) is not None

    def get(self, officer_id: str) -> Officer | None:
        """The officer, or None."""
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Officer, officer_id)

    def list(self) -> list[Officer]:
        """Every officer, by id."""
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(select(Officer).order_by(col(Officer.id))).all())

    def authenticate(self, officer_id: str, password: str) -> Officer | None:
        """The officer if the password matches and the account is active, else None."""
        officer = self.get(officer_id) if OFFICER_ID_PATTERN.fullmatch(officer_id) else None
        ok = verify_password(password, officer.password_hash if officer else _DUMMY_HASH)
        if officer is None or not ok or officer.disabled_at is not None:
            return None
        return officer

    def reset_password(self, officer_id: str) -> str:
        """Replace the password with a generated one (returned once); old sessions end."""
        password = secrets.token_urlsafe(18)
        with Session(self.engine) as session, session.begin():
            officer = session.get(Officer, officer_id)
            if officer is None:
                raise UnknownOfficerError(officer_id)
            officer.password_hash = hash_password(password)
        return password

    def disable(self, officer_id: str) -> None:
        """Disable an account: it can no longer sign in, and its sessions end."""
        with Session(self.engine) as session, session.begin():
            officer = session.get(Officer, officer_id)
            if officer is None:
                raise UnknownOfficerError(officer_id)
            if officer.disabled_at is None:
                officer.disabled_at = utcnow()
