"""A tenant's training data, read through its scope: catalog, content vectors, sequences.

Interactions come from the offline store (as Parquet: the events its consumer wrote and the
rows of ingested files), read as Arrow columns and encoded to dense indices without a Python
object per row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlmodel import col, select

from atlasrec.dataplane.embeddings import refresh_item_embeddings
from atlasrec.dataplane.plane import RegionDataPlane
from atlasrec.dataplane.session import TenantSession
from atlasrec.dataplane.tables import IngestBatch, Item
from atlasrec.evaluation import Interactions
from atlasrec.models.text import embed
from atlasrec.offline_store import TenantOffline
from atlasrec.tenancy import Scope
from privacy.canaries import CanarySet

COLUMNS = ("user_key", "item_id", "ts", "weight", "seq")


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


def plant_canaries(data: TenantDataset, canary: CanarySet) -> TenantDataset:
    """The data set with the tenant's canaries planted (`privacy.canaries`).

    Their items get content from their texts and no category; each canary user met every
    canary item at the newest timestamp. The canary items are not in the catalog, so
    serving never offers them; they are in the model's items, where the leakage scanner
    looks for them in other tenants' artifacts.
    """
    old = data.interactions
    first_item, first_user = len(data.item_ids), len(data.user_keys)
    pairs = [(u, i) for u in range(len(canary.users)) for i in range(len(canary.items))]
    newest = int(old.ts.max()) if len(old.ts) else 0
    interactions = Interactions.from_arrays(
        np.r_[old.users, [first_user + u for u, _ in pairs]],
        np.r_[old.items, [first_item + i for _, i in pairs]],
        np.r_[old.ts, [newest] * len(pairs)],
        np.r_[old.weights, [1.0] * len(pairs)],
        n_users=first_user + len(canary.users),
        n_items=first_item + len(canary.items),
    )
    content = np.vstack([data.content, embed(list(canary.texts))]).astype(data.content.dtype)
    return TenantDataset(
        [*data.item_ids, *canary.items],
        [*data.categories, *([None] * len(canary.items))],
        content,
        [*data.user_keys, *canary.users],
        interactions,
        data.snapshot,
    )


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
    offline = plane.offline.scoped(scope, actor=actor)
    with plane.session(scope, actor=actor, action="train.read") as session:
        return _read(session, offline, item_ids, content)


def _read(
    session: TenantSession, offline: TenantOffline, item_ids: list[str], content: np.ndarray
) -> TenantDataset:
    categories = dict(session.execute(select(Item.item_id, Item.category)).all())
    table = _plain(offline.read_table(COLUMNS))
    users, items, ts, weights, user_keys = encode(table, item_ids)
    data = Interactions.from_arrays(
        users, items, ts, weights, n_users=len(user_keys), n_items=len(item_ids)
    )
    # the ingested files' hashes and the live Parquet files (events and ingested rows)
    snapshot = snapshot_hash(session)
    if offline.files():
        snapshot = hashlib.sha256(f"{snapshot}:{offline.snapshot()}".encode()).hexdigest()
    return TenantDataset(
        item_ids, [categories.get(i) for i in item_ids], content, user_keys, data, snapshot
    )


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary-encoded id columns decoded (files' dictionaries differ)."""
    return pa.table(
        {
            name: pc.cast(table[name], pa.string())
            if name in ("user_key", "item_id")
            else table[name]
            for name in COLUMNS
        }
    )


def encode(
    table: pa.Table, item_ids: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(users, items, ts, weights, user keys): rows of known items, by (user, ts, seq).

    Users are numbered in the order of their keys; rows of items not in `item_ids` (removed
    from the catalog since) are left out.
    """
    item = pc.dictionary_encode(table["item_id"]).combine_chunks()
    positions = pc.index_in(item.dictionary, value_set=pa.array(item_ids, pa.string()))
    known = positions.fill_null(-1).to_numpy()[item.indices.to_numpy()]
    keep = known >= 0
    user = pc.dictionary_encode(table["user_key"]).combine_chunks()
    used, inverse = np.unique(user.indices.to_numpy()[keep], return_inverse=True)
    keys = user.dictionary.take(pa.array(used)).to_numpy(zero_copy_only=False)
    order = np.argsort(keys, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    users = rank[inverse]
    items = known[keep].astype(np.int64)
    ts = table["ts"].to_numpy()[keep]
    seq = table["seq"].to_numpy()[keep]
    weights = table["weight"].to_numpy()[keep].astype(np.float32)
    rows = np.lexsort((seq, ts, users))
    return users[rows], items[rows], ts[rows], weights[rows], [str(k) for k in keys[order]]
