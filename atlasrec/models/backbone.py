"""The shareable backbone as one flat vector: what federated clients exchange.

Only the ID-free towers (`Backbone`: item tower over content, user tower over pooled
history) are in it; a tenant's item-id residuals are never part of it. Its layout is fixed
by `BACKBONE_CONFIG` and the text encoder's dimension, so every tenant of every region
agrees on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from atlasrec.errors import InvalidInputError
from atlasrec.models.text import DIM as EMBEDDING_DIM
from atlasrec.models.two_tower import Backbone, TwoTowerConfig

BACKBONE_CONFIG = TwoTowerConfig(residuals=False, hidden=128, batch_size=128, pretrain_steps=400)
"""The towers federated and DP runs train (compact: fewer parameters, less noise), starting
from content-only pretraining (`atlasrec.models.pretrain`)."""


def backbone_shapes(
    config: TwoTowerConfig = BACKBONE_CONFIG, content_dim: int = EMBEDDING_DIM
) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the backbone, in the order of the flat vector."""
    module = Backbone(content_dim, config)
    return {name: tuple(p.shape) for name, p in sorted(module.state_dict().items())}


def backbone_size(config: TwoTowerConfig = BACKBONE_CONFIG) -> int:
    """Number of parameters in the flat vector."""
    return sum(int(np.prod(shape)) for shape in backbone_shapes(config).values())


def initial_backbone(
    seed: int, config: TwoTowerConfig = BACKBONE_CONFIG
) -> dict[str, torch.Tensor]:
    """The deterministic starting backbone of a federation (the same for every client)."""
    torch.manual_seed(seed)
    return Backbone(EMBEDDING_DIM, config).state_dict()


def flatten(
    state: Mapping[str, torch.Tensor], config: TwoTowerConfig = BACKBONE_CONFIG
) -> np.ndarray:
    """A backbone state dict as one float32 vector (refuses any other parameter)."""
    shapes = backbone_shapes(config)
    if set(state) != set(shapes):
        extra, missing = sorted(set(state) - set(shapes)), sorted(set(shapes) - set(state))
        raise InvalidInputError(
            f"not a backbone state: unexpected {extra or 'none'}, missing {missing or 'none'}"
        )
    parts = []
    for name, shape in shapes.items():
        tensor = state[name].detach().cpu()
        if tuple(tensor.shape) != shape:
            raise InvalidInputError(f"backbone parameter {name!r} has shape {tuple(tensor.shape)}")
        parts.append(tensor.numpy().astype(np.float32).ravel())
    return np.concatenate(parts)


def unflatten(
    vector: np.ndarray, config: TwoTowerConfig = BACKBONE_CONFIG
) -> dict[str, torch.Tensor]:
    """The inverse of `flatten`; refuses a vector of the wrong length or with non-finite values."""
    shapes = backbone_shapes(config)
    expected = sum(int(np.prod(s)) for s in shapes.values())
    flat = np.asarray(vector, dtype=np.float32).ravel()
    if flat.size != expected:
        raise InvalidInputError(f"backbone vector has {flat.size} values, expected {expected}")
    if not np.isfinite(flat).all():
        raise InvalidInputError("backbone vector holds non-finite values")
    state, start = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        state[name] = torch.from_numpy(flat[start : start + size].reshape(shape).copy())
        start += size
    return state
