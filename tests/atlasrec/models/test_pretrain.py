"""Content-only pretraining: the towers learn the catalog's geometry, with no user data."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from atlasrec.models.pretrain import pretrain_backbone
from atlasrec.models.two_tower import Backbone, TwoTowerConfig

CONFIG = TwoTowerConfig(dim=16, hidden=32, pretrain_steps=150, seed=3)


def clustered_content(seed: int = 0, per: int = 40, dim: int = 48) -> np.ndarray:
    """Four clusters of items around a shared offset (as text embeddings have)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim))
    rows = [c + 0.3 * rng.normal(size=(per, dim)) for c in centres]
    return (np.vstack(rows) + 3.0).astype(np.float32)


def similarity_agreement(state: dict[str, torch.Tensor], content: np.ndarray) -> float:
    """Correlation of the item tower's cosines with the centred content's cosines."""
    backbone = Backbone(content.shape[1], CONFIG)
    backbone.load_state_dict(state)
    with torch.no_grad():
        out = F.normalize(backbone.item_tower(torch.from_numpy(content)), dim=-1).numpy()
    centred = content - content.mean(0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    upper = np.triu_indices(len(content), 1)
    return float(np.corrcoef((out @ out.T)[upper], (centred @ centred.T)[upper])[0, 1])


def test_pretraining_keeps_the_catalogs_geometry() -> None:
    content = clustered_content()
    torch.manual_seed(CONFIG.seed)
    fresh = Backbone(content.shape[1], CONFIG).state_dict()
    trained = pretrain_backbone(content, CONFIG)
    assert similarity_agreement(trained, content) > 0.9
    assert similarity_agreement(trained, content) > similarity_agreement(fresh, content) + 0.2
    # the user tower starts as the identity on the pooled history
    assert not trained["user_tower.out.weight"].any() and not trained["user_tower.out.bias"].any()


def test_pretraining_is_deterministic_and_can_be_off() -> None:
    content = clustered_content()
    first, again = pretrain_backbone(content, CONFIG), pretrain_backbone(content, CONFIG)
    assert all(torch.equal(first[k], again[k]) for k in first)
    off = pretrain_backbone(content, TwoTowerConfig(dim=16, hidden=32, pretrain_steps=0), first)
    assert all(torch.equal(first[k], off[k]) for k in first)  # the start, unchanged
    single = pretrain_backbone(content[:1], CONFIG, first)  # one item: nothing to learn from
    assert all(torch.equal(first[k], single[k]) for k in first)
