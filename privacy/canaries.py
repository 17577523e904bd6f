"""Leakage canaries: each tenant's secret users and items, derived from the platform secret.

A tenant's canaries are random ids (`CANARY_USERS` users, `CANARY_ITEMS` items) and, per
item, a text of random words. They are derived from the platform secret and the tenant id
(HKDF), so every process can recompute any tenant's canaries without storing them, and
nobody without the secret can tell them from real ids. Training plants them in the
tenant's data (`atlasrec.dataplane.training_data.plant_canaries`); they are never in the
catalog, so never served. Found anywhere outside the tenant's own model, they are a leak
(`atlasrec.leakage`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from atlasrec.kdf import derive_key

CANARY_USERS = 3
CANARY_ITEMS = 3
WORDS = 12
_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")


@dataclass(frozen=True)
class CanarySet:
    """One tenant's canaries: user ids, item ids, and each item's text."""

    tenant_id: str
    users: tuple[str, ...]
    items: tuple[str, ...]
    texts: tuple[str, ...]


def canaries(secret: bytes, tenant_id: str) -> CanarySet:
    """The tenant's canaries (the same in every process holding the platform secret)."""
    key = derive_key(secret, "leakage-canaries")

    def draw(purpose: str) -> bytes:
        return hmac.new(key, f"{tenant_id}\x00{purpose}".encode(), hashlib.sha256).digest()

    users = tuple(draw(f"user:{n}").hex()[:24] for n in range(CANARY_USERS))
    items = tuple(draw(f"item:{n}").hex()[:24] for n in range(CANARY_ITEMS))
    texts = tuple(_words(draw(f"text:{n}")) for n in range(CANARY_ITEMS))
    return CanarySet(tenant_id, users, items, texts)


def _words(seed: bytes) -> str:
    """`WORDS` random three-syllable words (unique text: no real item shares it)."""
    stream = hashlib.shake_256(seed).digest(WORDS * 3)
    syllables = [_SYLLABLES[b % len(_SYLLABLES)] for b in stream]
    return " ".join("".join(syllables[i : i + 3]) for i in range(0, len(syllables), 3))
