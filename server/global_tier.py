"""The cross-region tier: regional shares of `global` tenants, combined into a global backbone.

`export_share` is the only way anything leaves a region's federation. It checks every
contributor with `atlasrec.boundary.federation_refusal(..., cross_region=True)` (only
`global` tenants homed in the region), refuses and audits anything else, and writes the
share (a ciphertext under the global tier's key: the regional aggregate of those tenants'
DP updates) to the tier's outbox. `combine` adds the latest share of each region into a
global backbone version; it too only adds ciphertexts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlasrec.artifacts import MANIFEST, publish_version
from atlasrec.boundary import federation_refusal
from atlasrec.errors import BoundaryViolation
from atlasrec.federation.store import BackboneVersion, global_store, key_service
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from privacy import he
from strategies.round_state import Contribution

SHARE = "share.bin"
EXPORTED, EXPORT_REFUSED = "federation.exported", "federation.export_refused"


@dataclass(frozen=True)
class Share:
    """One region's exported share."""

    region: str
    version: str
    path: Path
    manifest: dict[str, Any]

    def payload(self) -> bytes:
        """The ciphertext (under the global key)."""
        return (self.path / SHARE).read_bytes()


def outbox(platform: Platform, region: Region) -> Path:
    """Where a region's exported shares wait for the global aggregator."""
    return platform.settings.home / "global" / "outbox" / region.value


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


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
) -> Share:
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
    version, path, manifest = publish_version(
        outbox(platform, region),
        lambda folder: _write(folder / SHARE, payload),
        {"region": region.value, "kind": "global-share"},
        metadata,
    )
    ledger.append(
        actor=actor,
        action=EXPORTED,
        subject=f"global-share:{version}",
        details={**metadata, "bytes": len(payload)},
    )
    return Share(region.value, version, path, manifest)


def latest_shares(platform: Platform) -> list[Share]:
    """The newest share of every region that exported one."""
    shares = []
    for region in Region:
        folder = outbox(platform, region)
        pointer = folder / "LATEST"
        if pointer.exists():
            path = folder / pointer.read_text().strip()
            manifest = json.loads((path / MANIFEST).read_text())
            shares.append(Share(region.value, path.name, path, manifest))
    return shares


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
        contributors.update(share.manifest["metadata"]["contributors"])
    version = global_store(platform.settings).publish(
        total.to_bytes(),
        metadata={
            "encrypted": True,
            "key_id": total.key_id,
            "weight": sum(float(s.manifest["metadata"]["weight"]) for s in shares),
            "shares": {s.region: s.version for s in shares},
            "contributors": contributors,
        },
    )
    for share in shares:
        platform.plane(Region(share.region)).ledger.append(
            actor=actor,
            action="federation.global_combined",
            subject=f"backbone:global/{version.version}",
            details={"share": share.version, "regions": sorted(s.region for s in shares)},
        )
    return version
