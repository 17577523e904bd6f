"""Bearer tokens between regional audit UIs: an officer's short-lived pass to a peer's API.

A region's UI mints one per peer call on behalf of its signed-in officer. It names the
officer (and their password fingerprint, so a changed password voids it), the issuing
region, the audience region and an expiry, and is signed under a key derived from the
platform secret for this purpose only (no region's session key can forge one). The peer
verifies it, then reloads the officer and applies its own authorisation rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from atlasrec.kdf import derive_key
from atlasrec.tenancy import Region
from audit.ui.sessions import Signer

PEER_TOKEN_TTL_S = 60
PURPOSE = "peer-api"


def peer_signer(secret: bytes) -> Signer:
    """The signer of peer tokens (one key for every region: each checks the audience)."""
    return Signer(derive_key(secret, "atlasrec/audit-peer-api"))


@dataclass(frozen=True)
class PeerClaims:
    """What a valid peer token says."""

    officer_id: str
    fingerprint: str
    issuer: Region
    audience: Region


class PeerTokenError(ValueError):
    """A peer token that proves nothing; `claimed` is the officer it named, if readable."""

    def __init__(self, reason: str, claimed: str | None = None) -> None:
        super().__init__(reason)
        self.claimed = claimed


def mint(
    signer: Signer, officer_id: str, fingerprint: str, issuer: Region, audience: Region
) -> str:
    """A token for one call of `audience`'s API on behalf of `officer_id`."""
    payload = {"o": officer_id, "f": fingerprint, "iss": issuer.value, "aud": audience.value}
    return signer.sign(PURPOSE, payload, PEER_TOKEN_TTL_S)


def verify(signer: Signer, token: str | None, audience: Region) -> PeerClaims:
    """The claims of a valid, unexpired token for `audience`; `PeerTokenError` otherwise."""
    if not token:
        raise PeerTokenError("missing peer token (Authorization: Bearer ...)")
    payload = signer.unsign(PURPOSE, token)
    if payload is None:
        raise PeerTokenError("invalid peer token: forged, malformed or expired")
    officer, fp = payload.get("o"), payload.get("f")
    issuer, aud = payload.get("iss"), payload.get("aud")
    if not all(isinstance(v, str) for v in (officer, fp, issuer, aud)):
        raise PeerTokenError("invalid peer token: missing claims")
    claimed = str(officer)
    if aud != audience.value:
        raise PeerTokenError(f"peer token is for region {aud!r}, not {audience.value!r}", claimed)
    if issuer not in {r.value for r in Region}:
        raise PeerTokenError(f"peer token issued by unknown region {issuer!r}", claimed)
    return PeerClaims(claimed, str(fp), Region(str(issuer)), audience)
