"""Per-tenant pseudonymisation of user ids with a keyed hash, and wrapping of tenant keys.

A tenant's pseudonymisation key is random, stored only in its home region's database, and
wrapped (AES-GCM) with a key derived from the platform secret and that region, bound to the
tenant: a wrapped key copied to another region or tenant does not unwrap.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atlasrec.errors import CrossRegionError
from atlasrec.kdf import KEY_BYTES, derive_key
from atlasrec.tenancy import Scope

PSEUDONYM_HEX = 32  # 128 bits: collisions are negligible at billions of users


def new_tenant_key() -> bytes:
    """A fresh random key for a tenant."""
    return os.urandom(KEY_BYTES)


def wrap_key(secret: bytes, scope: Scope, key: bytes) -> bytes:
    """Encrypt a tenant key for storage in the scope's region."""
    nonce = os.urandom(12)
    aad = f"{scope.tenant_id}|{scope.region.value}".encode()
    kek = derive_key(secret, f"atlasrec/region-kek/{scope.region.value}")
    return nonce + AESGCM(kek).encrypt(nonce, key, aad)


def unwrap_key(secret: bytes, scope: Scope, wrapped: bytes) -> bytes:
    """Decrypt a tenant key; refuses a key wrapped for another tenant or region."""
    kek = derive_key(secret, f"atlasrec/region-kek/{scope.region.value}")
    aad = f"{scope.tenant_id}|{scope.region.value}".encode()
    try:
        return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], aad)
    except InvalidTag:
        raise CrossRegionError(
            f"the stored key of tenant {scope.tenant_id!r} does not belong to {scope}"
        ) from None


class Pseudonymiser:
    """Maps a tenant's user ids to stable pseudonyms (HMAC-SHA256, truncated to 128 bits)."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied per id: the key's
        self._cached = lru_cache(maxsize=200_000)(self._compute)  # pads are hashed once

    def _compute(self, user_id: str) -> str:
        mac = self._keyed.copy()
        mac.update(user_id.encode())
        return mac.hexdigest()[:PSEUDONYM_HEX]

    def __call__(self, user_id: str) -> str:
        """The pseudonym of `user_id`."""
        return self._cached(user_id)
