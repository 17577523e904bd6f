"""Request ids bound to the tenant they were issued to.

A served recommendation's id is 32 hex digits: 20 random, then 12 of an HMAC over the
tenant and those 20 (a per-region key derived from the platform secret). An event that says
it responds to a request (`POST /v1/events` `request_id`) is attributed only when the id was
issued to the event's own tenant in this region: checked by recomputing the tag, with no
lookup, so an event may arrive before the request's record reaches the region database.
Another tenant's id, another region's, or a made-up one fails the same check (`Boundary`
refuses it and audits the refusal).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from atlasrec.kdf import derive_key
from atlasrec.tenancy import Region

NONCE_HEX = 20
TAG_HEX = 12
SHAPE = re.compile(rf"^[0-9a-f]{{{NONCE_HEX + TAG_HEX}}}$")


class RequestIds:
    """Issues and checks one region's tenant-bound request ids."""

    def __init__(self, secret: bytes, region: Region) -> None:
        self._key = derive_key(secret, f"atlasrec/request-ids/{region.value}")

    def _tag(self, tenant_id: str, nonce: str) -> str:
        mac = hmac.new(self._key, f"{tenant_id}\x00{nonce}".encode(), hashlib.sha256)
        return mac.hexdigest()[:TAG_HEX]

    def issue(self, tenant_id: str, random_hex: str) -> str:
        """The id of a request served to `tenant_id`, from at least 20 random hex digits."""
        nonce = random_hex[:NONCE_HEX]
        return nonce + self._tag(tenant_id, nonce)

    def issued_to(self, tenant_id: str, request_id: str) -> bool:
        """Whether `request_id` was issued to `tenant_id` here (constant-time compare)."""
        if not SHAPE.fullmatch(request_id):
            return False
        nonce, tag = request_id[:NONCE_HEX], request_id[NONCE_HEX:]
        return hmac.compare_digest(tag, self._tag(tenant_id, nonce))
