"""Content-only pretraining of the towers: a starting point that costs no privacy budget.

Freshly initialised towers map items to random directions, so a DP run, whose updates are
mostly noise at small user counts, starts from (and mostly stays at) a model that
recommends at random. Pretraining teaches the item tower to keep the geometry of the
catalog's text embeddings: in a batch of items, the cosine similarities of the tower's
outputs regress onto those of the mean-centred content embeddings. The user tower's
residual branch starts at zero, so a user is the recency-weighted mean of their items.
The result recommends by content similarity before it has seen any interaction.

Only item content is used (no user data), so this step is outside every DP guarantee's
scope and charges nothing; it is deterministic given the seed and the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.nn import functional as F

from atlasrec.models.two_tower import Backbone, TwoTowerConfig

BATCH = 1024
LR = 3e-3


def pretrain_backbone(
    content: np.ndarray,
    config: TwoTowerConfig,
    start: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Backbone weights after `config.pretrain_steps` steps on `content` [items, dim].

    Starts from `start` (a backbone state dict) or from the seed's fresh towers. Returns
    `start` (or the fresh towers) unchanged when `pretrain_steps` is 0 or there are fewer
    than two items.
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    backbone = Backbone(content.shape[1], config)
    if start is not None:
        backbone.load_state_dict(dict(start))
    if config.pretrain_steps <= 0 or len(content) < 2:
        return backbone.state_dict()
    with torch.no_grad():
        backbone.user_tower.out.weight.zero_()
        backbone.user_tower.out.bias.zero_()
    raw = torch.from_numpy(np.ascontiguousarray(content, dtype=np.float32))
    target = F.normalize(raw - raw.mean(0), dim=-1)
    optimizer = torch.optim.Adam(backbone.item_tower.parameters(), lr=LR)
    size = min(BATCH, len(raw))
    for _ in range(config.pretrain_steps):
        idx = torch.randperm(len(raw), generator=generator)[:size]
        out = F.normalize(backbone.item_tower(raw[idx]), dim=-1)
        want = target[idx] @ target[idx].T
        loss = ((out @ out.T - want) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return {name: t.detach().clone() for name, t in backbone.state_dict().items()}
