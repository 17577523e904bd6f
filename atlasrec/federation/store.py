"""Published backbone versions of a region (or of the cross-region `global` tier).

A version is the aggregate `sum(weight_i x backbone_i)` and its total weight, kept as the
aggregator produced it: a CKKS ciphertext under the domain's key (so the store, like the
aggregator, holds nothing readable), or a float32 vector when encryption is off. Key
holders decrypt it with `open_backbone`. Versions are published atomically
(`atlasrec.artifacts.publish_version`), with the round's lineage in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlasrec.artifacts import (
    MANIFEST,
    latest_usable,
    publish_version,
    quarantine_version,
    usable_versions,
)
from atlasrec.errors import InvalidInputError
from atlasrec.files import write_atomic
from atlasrec.models.backbone import unflatten
from atlasrec.settings import Settings
from atlasrec.tenancy import Region
from privacy import he
from privacy.keys import KeyService

PAYLOAD = "backbone.bin"
GLOBAL = "global"


def region_domain(region: Region) -> str:
    """The key domain (and store name) of a region's federation."""
    return f"region-{region.value}"


def key_service(settings: Settings) -> KeyService:
    """The key service of this deployment (its folder is never given to an aggregator)."""
    return KeyService(settings.home / "keys")


@dataclass(frozen=True)
class BackboneVersion:
    """One published backbone version."""

    domain: str
    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def metadata(self) -> dict[str, Any]:
        """The lineage of this version (round, contributors, epsilon charged per tenant)."""
        meta: dict[str, Any] = self.manifest.get("metadata", {})
        return meta

    @property
    def region(self) -> str | None:
        """The region the aggregate comes from (None for the cross-region tier's)."""
        value = self.metadata.get("region")
        return None if value is None else str(value)

    @property
    def weight(self) -> float:
        """Total aggregation weight of the sum."""
        return float(self.metadata["weight"])

    @property
    def encrypted(self) -> bool:
        """Whether the payload is a ciphertext."""
        return bool(self.metadata.get("encrypted", True))

    def payload(self) -> bytes:
        """The stored aggregate, checked against the manifest's hash."""
        data = (self.path / PAYLOAD).read_bytes()
        if hashlib.sha256(data).hexdigest() != self.manifest["files"].get(PAYLOAD):
            raise InvalidInputError(f"backbone {self.domain}/{self.version} fails its checksum")
        return data


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


class BackboneStore:
    """Backbone versions of one key domain, under `<root>/<domain>/`."""

    def __init__(self, root: Path, domain: str, *, kind: str = "backbone") -> None:
        self.domain = domain
        self.kind = kind
        self.folder = root / domain

    def publish(
        self, payload: bytes, *, metadata: dict[str, Any], point_latest: bool = True
    ) -> BackboneVersion:
        """Publish a new version atomically (LATEST moves now, or with `point_latest`)."""
        version, path, manifest = publish_version(
            self.folder,
            lambda folder: _write(folder / PAYLOAD, payload),
            {"domain": self.domain, "kind": self.kind},
            metadata,
            point_latest=point_latest,
        )
        return BackboneVersion(self.domain, version, path, manifest)

    def point_latest(self, version: str) -> None:
        """Make a published version the newest (after it is recorded)."""
        write_atomic(self.folder / "LATEST", self.get(version).version.encode())

    def unquarantined(self) -> list[str]:
        """Published version names, oldest first, without the quarantined ones."""
        return usable_versions(self.folder)

    def quarantine(self, version: str, reason: str, *, actor: str) -> None:
        """Mark a version quarantined (as `ArtifactStore.quarantine` marks a model's)."""
        quarantine_version(self.get(version).path, reason, actor=actor)

    def latest_name(self) -> str | None:
        """The newest version's name not quarantined, or None (reads the pointer only)."""
        return latest_usable(self.folder)

    def latest(self) -> BackboneVersion | None:
        """The newest version not quarantined, or None."""
        name = self.latest_name()
        return None if name is None else self.get(name)

    def get(self, version: str) -> BackboneVersion:
        """One version by name."""
        path = self.folder / version
        if "/" in version or not (path / MANIFEST).is_file():
            raise InvalidInputError(f"no backbone version {version!r} in {self.domain}")
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("domain") != self.domain:
            raise InvalidInputError(f"backbone {version!r} is not attributed to {self.domain}")
        return BackboneVersion(self.domain, version, path, manifest)


def backbone_root(settings: Settings) -> Path:
    """Where every domain's backbone store lives locally."""
    return settings.home / "backbones"


def region_store(settings: Settings, region: Region) -> BackboneStore:
    """The backbone store of a region's federation."""
    return BackboneStore(backbone_root(settings), region_domain(region))


def global_store(settings: Settings) -> BackboneStore:
    """The backbone store of the cross-region tier (global tenants only)."""
    return BackboneStore(backbone_root(settings), GLOBAL)


def aggregate_vector(
    payload: bytes | np.ndarray, weight: float, *, secret: Any | None
) -> np.ndarray:
    """The averaged backbone vector of an aggregate (decrypting needs the domain's key)."""
    if isinstance(payload, bytes):
        if secret is None:
            raise InvalidInputError("an encrypted aggregate needs the domain's secret key")
        total = he.decrypt(secret, he.EncryptedVector.from_bytes(payload))
    else:
        total = np.asarray(payload, dtype=np.float32)
    return (np.asarray(total, dtype=np.float64) / weight).astype(np.float32)


def open_backbone(settings: Settings, version: BackboneVersion) -> dict[str, torch.Tensor]:
    """Decrypt a published version into backbone weights (key holders only)."""
    if version.encrypted:
        secret = key_service(settings).secret_context(version.domain)
        vector = aggregate_vector(version.payload(), version.weight, secret=secret)
    else:
        raw = np.frombuffer(version.payload(), dtype=np.float32)
        vector = aggregate_vector(raw, version.weight, secret=None)
    return unflatten(vector)
