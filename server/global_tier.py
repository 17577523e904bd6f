"""The cross-region tier: regional shares of `global` tenants, combined into a global backbone.

`export_share` is the only way anything leaves a region's federation. It checks every
contributor with `atlasrec.boundary.federation_refusal(..., cross_region=True)` (only
`global` tenants homed in the region), refuses and audits anything else, and writes the
share (a ciphertext under the global tier's key: the regional aggregate of those tenants'
DP updates) to the tier's outbox. `combine` adds the latest share of each region into a
global backbone version; it too only adds ciphertexts.
"""

from __future__ import annotations

from collections.abc import Sequence

from atlasrec.boundary import federation_refusal
from atlasrec.errors import BoundaryViolation
from atlasrec.federation.store import BackboneStore, BackboneVersion, global_store, key_service
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from privacy import he
from strategies.round_state import Contribution

EXPORTED, EXPORT_REFUSED = "federation.exported", "federation.export_refused"


def share_store(platform: Platform, region: Region) -> BackboneStore:
    """The tier's outbox for a region: its exported shares, waiting for the global aggregator."""
    return BackboneStore(
        platform.settings.home / "global" / "outbox", region.value, kind="global-share"
    )


def export_share(
    platform: Platform,
    region: Region,
    *,
    run_id: str,
    round_: int,
    payload: bytes,
    weight: float,
    contributors: Sequence[Contribution],
    actor: str,
) -> BackboneVersion:
    """Write the region's global share to the outbox; refuse (audited) a foreign contributor.

    Every contributor must be a `global` tenant homed in `region`.
    """
    ledger = platform.plane(region).ledger
    for c in contributors:
        home = platform.control.home_region_of(c.tenant_id)
        sharing = SharingPolicy(platform.control.get_tenant(c.tenant_id).sharing) if home else None
        reason = federation_refusal(c.tenant_id, home, sharing, region, cross_region=True)
        if reason is not None:
            ledger.append(
                actor=actor,
                action=EXPORT_REFUSED,
                subject=f"federation:{run_id}/{round_}",
                tenant_id=c.tenant_id,
                details={"region": region.value, "reason": reason},
            )
            raise BoundaryViolation(f"refused to export region {region.value!r}'s share: {reason}")
    metadata = {
        "region": region.value,
        "federation_run": run_id,
        "round": round_,
        "weight": weight,
        "key_id": he.EncryptedVector.from_bytes(payload).key_id,
        "contributors": {c.tenant_id: c.epsilon for c in contributors},
    }
    share = share_store(platform, region).publish(payload, metadata=metadata)
    ledger.append(
        actor=actor,
        action=EXPORTED,
        subject=f"global-share:{share.version}",
        details={**metadata, "bytes": len(payload)},
    )
    return share


def latest_shares(platform: Platform) -> list[BackboneVersion]:
    """The newest share of every region that exported one."""
    latest = (share_store(platform, region).latest() for region in Region)
    return [share for share in latest if share is not None]


def combine(platform: Platform, *, actor: str) -> BackboneVersion | None:
    """Add the latest share of each region into a new global backbone version (or None)."""
    shares = latest_shares(platform)
    if not shares:
        return None
    keys = key_service(platform.settings)
    context = he.load_context(keys.public_context("global"))
    total = he.add(context, [he.EncryptedVector.from_bytes(s.payload()) for s in shares])
    contributors: dict[str, float] = {}
    for share in shares:
        contributors.update(share.metadata["contributors"])
    version = global_store(platform.settings).publish(
        total.to_bytes(),
        metadata={
            "encrypted": True,
            "key_id": total.key_id,
            "weight": sum(s.weight for s in shares),
            "shares": {s.domain: s.version for s in shares},
            "contributors": contributors,
        },
    )
    for share in shares:
        platform.plane(Region(share.domain)).ledger.append(
            actor=actor,
            action="federation.global_combined",
            subject=f"backbone:global/{version.version}",
            details={"share": share.version, "regions": sorted(s.domain for s in shares)},
        )
    return version
