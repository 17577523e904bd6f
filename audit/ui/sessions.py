"""Officer sessions of the audit UI: signed cookies, CSRF tokens and device cookies.

A session is a cookie holding `{officer, session id, expiry, password fingerprint}` signed
with HMAC-SHA256 under a key derived from the platform secret and the app's region (a
session of one region's UI is worthless at another's). It is HttpOnly, SameSite=Strict,
limited to `/audit`, and Secure over HTTPS. Forms carry a CSRF token derived from the
session id (sign-in: from a short-lived signed cookie of the sign-in page). A browser that
signed in gets a long-lived device cookie, which the sign-in throttle trusts
(`atlasrec.control.signin_throttle`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from atlasrec.kdf import derive_key

SESSION_COOKIE = "atlasrec_audit"
SIGNIN_COOKIE = "atlasrec_audit_signin"
SESSION_TTL_S = 8 * 3600
SIGNIN_TTL_S = 3600
DEVICE_COOKIE = "atlasrec_audit_device"
DEVICE_TTL_S = 180 * 24 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of texts (any characters: bytes are compared)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


class Signer:
    """HMAC-SHA256 signed, expiring JSON tokens."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_region(cls, secret: bytes, region: str) -> Signer:
        """The signer of one region's audit UI."""
        return cls(derive_key(secret, f"atlasrec/audit-ui/{region}"))

    def _mac(self, purpose: str, body: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}|{body}".encode(), hashlib.sha256).digest())

    def sign(self, purpose: str, payload: dict[str, Any], ttl_s: float) -> str:
        """A token for `payload` that `unsign` accepts for `ttl_s` seconds."""
        body = _b64(json.dumps({**payload, "exp": int(time.time() + ttl_s)}).encode())
        return f"{body}.{self._mac(purpose, body)}"

    def unsign(self, purpose: str, token: str | None) -> dict[str, Any] | None:
        """The payload of a valid, unexpired token of `purpose`, else None."""
        if not token or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        if not _same(mac, self._mac(purpose, body)):
            return None
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            return None
        return payload if payload["exp"] > time.time() else None

    def token(self, purpose: str, value: str) -> str:
        """A CSRF token bound to `value` (a session id or a sign-in nonce)."""
        return self._mac(f"csrf:{purpose}", value)

    def check_token(self, purpose: str, value: str, token: str) -> bool:
        """Whether `token` is the CSRF token of `value`."""
        return _same(self.token(purpose, value), token)


@dataclass(frozen=True)
class SessionData:
    """What a valid session cookie says."""

    officer_id: str
    session_id: str
    fingerprint: str
    expires: int


def new_session(signer: Signer, officer_id: str, fingerprint: str) -> tuple[str, SessionData]:
    """A fresh session: its cookie value and its data."""
    session_id = secrets.token_urlsafe(16)
    cookie = signer.sign(
        "session", {"o": officer_id, "s": session_id, "f": fingerprint}, SESSION_TTL_S
    )
    expires = int(time.time()) + SESSION_TTL_S
    return cookie, SessionData(officer_id, session_id, fingerprint, expires)


def read_session(signer: Signer, cookie: str | None) -> SessionData | None:
    """The session of a cookie, or None if it is missing, forged or expired."""
    payload = signer.unsign("session", cookie)
    if payload is None:
        return None
    officer, session_id, fp = payload.get("o"), payload.get("s"), payload.get("f")
    if not (isinstance(officer, str) and isinstance(session_id, str) and isinstance(fp, str)):
        return None
    return SessionData(officer, session_id, fp, payload["exp"])


def new_device(signer: Signer, officer_id: str) -> str:
    """A device cookie: this browser has signed in as `officer_id` (see the sign-in throttle)."""
    return signer.sign("device", {"o": officer_id, "d": secrets.token_urlsafe(16)}, DEVICE_TTL_S)


def device_of(signer: Signer, cookie: str | None, officer_id: str) -> str | None:
    """The device id of a valid device cookie issued to `officer_id`, else None."""
    payload = signer.unsign("device", cookie)
    if payload is None or payload.get("o") != officer_id or not isinstance(payload.get("d"), str):
        return None
    device: str = payload["d"]
    return device
