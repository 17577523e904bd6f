"""A tenant's training data, read through its scope: catalog, content vectors, sequences."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlmodel import col, select

from atlasrec.dataplane.embeddings import refresh_item_embeddings
from atlasrec.dataplane.plane import RegionDataPlane
from atlasrec.dataplane.session import TenantSession
from atlasrec.dataplane.tables import IngestBatch, Interaction, Item
from atlasrec.evaluation import Interactions
from atlasrec.tenancy import Scope


@dataclass(frozen=True)
class TenantDataset:
    """Everything training and evaluation need, with dense item and user indices."""

    item_ids: list[str]
    categories: list[str | None]
    content: np.ndarray
    user_keys: list[str]
    interactions: Interactions
    snapshot: str

    @property
    def n_interactions(self) -> int:
        """Number of interaction rows."""
        return len(self.interactions.users)


def snapshot_hash(session: TenantSession) -> str:
    """Identifies the ingested data: a hash over the content hashes of every ingested file."""
    shas = session.execute(
        select(IngestBatch.kind, IngestBatch.sha256).order_by(
            col(IngestBatch.kind), col(IngestBatch.sha256)
        )
    ).all()
    return hashlib.sha256("".join(f"{k}:{s};" for k, s in shas).encode()).hexdigest()


def load_tenant_dataset(plane: RegionDataPlane[Any], scope: Scope, *, actor: str) -> TenantDataset:
    """Read the tenant's catalog (embedding new or changed items) and interactions."""
    item_ids, content = refresh_item_embeddings(plane, scope, actor=actor)
    with plane.session(scope, actor=actor, action="train.read") as session:
        return _read(session, item_ids, content)


def _read(session: TenantSession, item_ids: list[str], content: np.ndarray) -> TenantDataset:
    index = {item_id: n for n, item_id in enumerate(item_ids)}
    categories = dict(session.execute(select(Item.item_id, Item.category)).all())
    rows = session.execute(
        select(
            Interaction.user_key, Interaction.item_id, Interaction.ts, Interaction.weight
        ).order_by(col(Interaction.user_key), col(Interaction.ts))
    ).all()
    user_index: dict[str, int] = {}
    users = np.fromiter(
        (user_index.setdefault(r[0], len(user_index)) for r in rows), np.int64, len(rows)
    )
    items = np.fromiter((index[r[1]] for r in rows), np.int64, len(rows))
    ts = np.fromiter((r[2] for r in rows), np.int64, len(rows))
    weights = np.fromiter((r[3] for r in rows), np.float32, len(rows))
    data = Interactions.from_arrays(
        users, items, ts, weights, n_users=len(user_index), n_items=len(item_ids)
    )
    return TenantDataset(
        item_ids,
        [categories.get(i) for i in item_ids],
        content,
        list(user_index),
        data,
        snapshot_hash(session),
    )
