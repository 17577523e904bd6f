"""Non-personal fallback serving of a `global` tenant in another region, by its opt-in.

A `global` tenant may name a fallback region (`atlasrec tenants fallback`). Its home region
then publishes a catalog copy there, which the fallback region's serving processes answer
from while the home region is out (clients send the tenant's requests there when its home
answers no longer):
- the copy holds catalog content only: item ids, categories, policy attributes and content
  embeddings (of the catalog's own text), never a user, an interaction or a model weight;
- popularity goes only as the DP release of the tenant's latest DP model
  (`popularity_release` in its lineage); a model trained without DP sends none, and the
  fallback ranks by content and catalog order alone;
- fallback answers ignore the user id (no pseudonym, no profile, no record of the user):
  they score with the cross-region tier's global backbone (`backbone_bundle`: ID-free
  towers over the copy's content, the released popularity as its prior; content alone
  while none is published) from `context.recent_items`; policy filtered as always.

`solo` and `regional` tenants may not have one: their serving fails closed with their home
region (docs/runbooks.md gives the client-side fallback). The copy is reachable only
through the fallback region's boundary (`Boundary.admit_fallback`), which admits it only
while the tenant names that region; every copy is recorded in both regions' ledgers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atlasrec.artifacts import (
    latest_usable,
    publish_version,
    quarantine_version,
    usable_versions,
)
from atlasrec.control.tables import Tenant
from atlasrec.dataplane.embeddings import EmbeddedItem, embedded_items
from atlasrec.errors import AtlasRecError, InvalidInputError, NotYetAvailableError
from atlasrec.federation.store import global_store, open_backbone
from atlasrec.models.backbone import BACKBONE_CONFIG
from atlasrec.models.bundle import KIND, ModelBundle
from atlasrec.models.two_tower import TwoTower
from atlasrec.platform import Platform
from atlasrec.tenancy import Region

ACTOR = "fallback"
FOLDER = "fallback"
ITEMS = "items.json"
VECTORS = "vectors.npy"
POPULARITY = "popularity.npy"
EXPORTED = "fallback.exported"
RECEIVED = "fallback.received"
SET = "fallback.set"


@dataclass(frozen=True)
class FallbackCopy:
    """A tenant's catalog copy in its fallback region."""

    tenant_id: str
    version: str
    items: list[dict[str, Any]]
    """`item_id`, `category`, `attributes` of each item."""
    vectors: np.ndarray
    popularity: np.ndarray | None
    """The DP-released counts, in `items` order (None: none was released)."""

    def released_counts(self) -> dict[str, float]:
        """The released counts by item id (empty: none was released)."""
        if self.popularity is None:
            return {}
        ids = [item["item_id"] for item in self.items]
        return dict(zip(ids, self.popularity.tolist(), strict=True))


def copies_root(platform: Platform, region: Region) -> Path:
    """Where a region keeps other regions' tenants' fallback copies."""
    return platform.settings.region_dir(region) / FOLDER


def set_fallback(
    platform: Platform, tenant_id: str, region: Region | None, *, actor: str
) -> dict[str, Any]:
    """Name (or clear) a global tenant's fallback region; publish its copy there when named."""
    tenant = platform.control.set_fallback_region(tenant_id, region)
    home = Region(tenant.home_region)
    platform.plane(home).ledger.append(
        actor=actor,
        action=SET,
        subject=f"tenant:{tenant_id}",
        tenant_id=tenant_id,
        details={"fallback_region": None if region is None else region.value},
    )
    copy = None if region is None else publish_copy(platform, tenant_id, actor=actor)
    return {
        "tenant": tenant_id,
        "home": home.value,
        "fallback_region": region and region.value,
        "copy": copy,
    }


def publish_copy(platform: Platform, tenant_id: str, *, actor: str) -> dict[str, Any]:
    """Publish the tenant's catalog copy in its fallback region (atomically); what went."""
    tenant = platform.control.get_tenant(tenant_id)
    if tenant.fallback_region is None:
        raise InvalidInputError(f"tenant {tenant_id!r} has no fallback region")
    home, target = Region(tenant.home_region), Region(tenant.fallback_region)
    scope = platform.scope(tenant_id)
    items = embedded_items(platform.plane(home), scope, actor=actor)
    if not items:
        raise NotYetAvailableError(f"tenant {tenant_id!r} has no catalog to copy yet")
    popularity, source = _released_popularity(platform, tenant, items, actor)
    plane = platform.plane(target)
    plane.boundary.admit_fallback(tenant_id, actor=actor, action="fallback.publish")
    owner = {"tenant_id": tenant_id, "region": target.value, "kind": FOLDER, "home": home.value}
    version, _, _ = publish_version(
        copies_root(platform, target) / tenant_id,
        lambda folder: _write(folder, items, popularity),
        owner,
        {"popularity_from": source},
    )
    details = {
        "version": version,
        "items": len(items),
        "popularity": "dp-release" if popularity is not None else None,
        "popularity_from": source,
    }
    platform.plane(home).ledger.append(
        actor=actor,
        action=EXPORTED,
        subject=f"region:{target.value}",
        tenant_id=tenant_id,
        details={**details, "to": target.value},
    )
    plane.ledger.append(
        actor=actor,
        action=RECEIVED,
        subject=f"tenant:{tenant_id}",
        tenant_id=tenant_id,
        details={**details, "from": home.value},
    )
    return {**details, "region": target.value}


def _released_popularity(
    platform: Platform, tenant: Tenant, items: list[EmbeddedItem], actor: str
) -> tuple[np.ndarray | None, str | None]:
    """The latest model's DP popularity release in `items` order, and that model's version."""
    scope = platform.scope(tenant.id)
    artifact = platform.plane(scope.region).artifacts.latest(scope, KIND, actor=actor)
    if artifact is None:
        return None, None
    dp = artifact.manifest.get("metadata", {}).get("dp") or {}
    if not dp.get("popularity_release"):
        return None, None  # a non-DP model's counts are exact: they never leave the region
    bundle = ModelBundle.load(artifact)
    released = dict(zip(bundle.item_ids, bundle.popularity.tolist(), strict=True))
    counts = np.array([max(0.0, released.get(i.item_id, 0.0)) for i in items], np.float32)
    return counts, artifact.version


def _write(folder: Path, items: list[EmbeddedItem], popularity: np.ndarray | None) -> None:
    rows = [
        {"item_id": i.item_id, "category": i.category, "attributes": i.attributes} for i in items
    ]
    (folder / ITEMS).write_text(json.dumps(rows))
    np.save(folder / VECTORS, np.stack([i.vector for i in items]).astype(np.float32))
    if popularity is not None:
        np.save(folder / POPULARITY, popularity)


def copy_version(platform: Platform, region: Region, tenant_id: str) -> str | None:
    """The newest copy's version in `region` not quarantined, or None.

    Its name only: reading the copy goes through `latest_copy`, which the boundary admits.
    """
    return latest_usable(copies_root(platform, region) / tenant_id)


def held_copies(platform: Platform, region: Region) -> dict[str, list[str]]:
    """Every tenant's unquarantined copy versions held in `region`, oldest first."""
    root = copies_root(platform, region)
    if not root.is_dir():
        return {}
    return {t.name: usable_versions(t) for t in sorted(root.iterdir()) if t.is_dir()}


def copy_path(platform: Platform, region: Region, tenant_id: str, version: str) -> Path:
    """The folder of one copy version (for the leakage scanner)."""
    return copies_root(platform, region) / tenant_id / version


def quarantine_copy(
    platform: Platform, region: Region, tenant_id: str, version: str, reason: str, *, actor: str
) -> None:
    """Take a copy version out of use for good (never served again); idempotent."""
    quarantine_version(copy_path(platform, region, tenant_id, version), reason, actor=actor)


def latest_copy(platform: Platform, region: Region, tenant_id: str) -> FallbackCopy | None:
    """The newest copy of a tenant's catalog that `region` may serve from, or None."""
    plane = platform.plane(region)
    plane.boundary.admit_fallback(tenant_id, actor="serving", action="fallback.read")
    version = copy_version(platform, region, tenant_id)
    if version is None:
        return None
    path = copy_path(platform, region, tenant_id, version)
    popularity = path / POPULARITY
    return FallbackCopy(
        tenant_id=tenant_id,
        version=path.name,
        items=json.loads((path / ITEMS).read_text()),
        vectors=np.load(path / VECTORS),
        popularity=np.load(popularity) if popularity.exists() else None,
    )


def global_backbone(platform: Platform) -> str | None:
    """The global backbone version fallbacks score with (its pointer only), or None."""
    return global_store(platform.settings).latest_name()


def backbone_bundle(platform: Platform, copy: FallbackCopy, backbone: str) -> ModelBundle:
    """A model over the copy's catalog from global backbone version `backbone`.

    The backbone's towers, no item-id residual, the released popularity (if any) as its
    prior. Raises `InvalidInputError` if the backbone cannot be opened.
    """
    try:
        state = open_backbone(platform.settings, global_store(platform.settings).get(backbone))
    except (AtlasRecError, KeyError, ValueError) as exc:
        raise InvalidInputError(
            f"tenant {copy.tenant_id!r}: cannot open global backbone {backbone} ({exc})"
        ) from None
    model = TwoTower(copy.vectors.astype(np.float32), BACKBONE_CONFIG)
    model.backbone.load_state_dict(state)
    counts = np.zeros(len(copy.items), np.float32) if copy.popularity is None else copy.popularity
    model.set_popularity(counts)
    model.eval()
    return ModelBundle(
        version=f"fallback-{copy.version}+global-{backbone}",
        model=model,
        item_ids=[i["item_id"] for i in copy.items],
        item_vectors=model.all_item_vectors(),
        popularity=counts,
        lineage={"fallback_copy": copy.version, "global_backbone": backbone},
    )
