"""Item content embeddings in a region: each item embedded once per content version.

Vectors are cached in the region's store (`item_embeddings`), keyed by encoder and the
SHA-256 of the text that was embedded; the encoder is `atlasrec.models.text`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from atlasrec.dataplane.plane import RegionDataPlane
from atlasrec.dataplane.tables import Item, ItemEmbedding
from atlasrec.models.text import DIM, ENCODER, embed, item_text
from atlasrec.tenancy import Scope


@dataclass(frozen=True)
class EmbeddedItem:
    """A catalog item with its content embedding."""

    item_id: str
    category: str | None
    attributes: dict[str, Any]
    updated_at: datetime
    content_sha: str
    vector: np.ndarray


def embedded_items(
    plane: RegionDataPlane[Any],
    scope: Scope,
    *,
    actor: str,
    since: datetime | None = None,
    item_ids: Sequence[str] | None = None,
) -> list[EmbeddedItem]:
    """The tenant's items (or those updated after `since`, or `item_ids`) with embeddings.

    New or changed items are embedded and cached. The encoder runs between two short
    transactions (read what is stale, then store), never inside one: a slow embedding pass
    must not hold the region database's write lock.
    """
    query = select(Item).order_by(col(Item.item_id))
    if since is not None:
        query = query.where(col(Item.updated_at) > since)
    if item_ids is not None:
        query = query.where(col(Item.item_id).in_(list(item_ids)))
    with plane.session(scope, actor=actor, action="embeddings.read") as session:
        items = [
            (i.item_id, i.title, i.category, i.description, dict(i.attributes), i.updated_at)
            for i in session.execute(query).scalars()
        ]
        cached_query = select(ItemEmbedding).where(ItemEmbedding.encoder == ENCODER)
        if since is not None or item_ids is not None:
            cached_query = cached_query.where(col(ItemEmbedding.item_id).in_([i[0] for i in items]))
        cached = {
            row.item_id: (row.content_sha, row.vector)
            for row in session.execute(cached_query).scalars()
        }
    texts = {i[0]: item_text(i[1], i[2], i[3]) for i in items}
    shas = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in texts.items()}
    stale = [k for k in texts if k not in cached or cached[k][0] != shas[k]]
    vectors = {k: np.frombuffer(v, dtype=np.float32) for k, (_, v) in cached.items() if k in shas}
    fresh = embed([texts[k] for k in stale])
    vectors.update({k: fresh[n] for n, k in enumerate(stale)})
    if stale:
        _store(plane, scope, actor, [(k, shas[k], vectors[k]) for k in stale])
    return [
        EmbeddedItem(item_id, category, attributes, updated, shas[item_id], vectors[item_id])
        for item_id, _, category, _, attributes, updated in items
    ]


def _store(
    plane: RegionDataPlane[Any], scope: Scope, actor: str, rows: list[tuple[str, str, np.ndarray]]
) -> None:
    with plane.session(scope, actor=actor, action="embeddings.write") as session:
        insert = (
            postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        )(ItemEmbedding)
        statement = insert.on_conflict_do_update(
            index_elements=["tenant_id", "item_id", "encoder"],
            set_={"content_sha": insert.excluded.content_sha, "vector": insert.excluded.vector},
        )
        for start in range(0, len(rows), 1000):
            session.execute(
                statement,
                [
                    {
                        "tenant_id": scope.tenant_id,
                        "item_id": item_id,
                        "encoder": ENCODER,
                        "content_sha": sha,
                        "vector": vector.tobytes(),
                    }
                    for item_id, sha, vector in rows[start : start + 1000]
                ],
            )


def refresh_item_embeddings(
    plane: RegionDataPlane[Any], scope: Scope, *, actor: str
) -> tuple[list[str], np.ndarray]:
    """Embed the tenant's new or changed items; return all item ids and their vectors."""
    items = embedded_items(plane, scope, actor=actor)
    ids = [i.item_id for i in items]
    matrix = np.stack([i.vector for i in items]) if ids else np.zeros((0, DIM), np.float32)
    return ids, matrix
