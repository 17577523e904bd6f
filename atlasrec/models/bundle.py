"""A trained model as a published artifact: weights, catalog order, item vectors, lineage."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from atlasrec.models.ranking.ranker import DEFAULT_RANKER, LinearRanker
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig

KIND = "two-tower"
WEIGHTS, ITEMS, VECTORS, POPULARITY = "model.pt", "items.json", "item_vectors.npy", "popularity.npy"
RANKER, NEIGHBOURS = "ranker.json", "neighbours.npz"
PRIOR_KEYS = frozenset({"log_popularity", "popularity.weight"})
"""Weights a model saved before the popularity prior lacks."""


class Published(Protocol):
    """A published version's folder (an `atlasrec.artifacts.Artifact`)."""

    @property
    def version(self) -> str:
        """The version name."""

    @property
    def path(self) -> Path:
        """The folder holding the version's files."""

    @property
    def manifest(self) -> dict[str, Any]:
        """The version's manifest."""


def write_bundle(
    folder: Path,
    model: TwoTower,
    item_ids: list[str],
    popularity: np.ndarray,
    ranker: LinearRanker | None = None,
    neighbours: sp.csr_matrix | None = None,
) -> None:
    """Write a model's files into an artifact's staging folder.

    `neighbours` (`atlasrec.models.cooccurrence`): a non-DP model's (the ranker's feature
    and source where it weighs them, and the `profile` intent's pooling).
    """
    torch.save({"config": model.config.as_dict(), "state": model.state_dict()}, folder / WEIGHTS)
    (folder / ITEMS).write_text(json.dumps(item_ids))
    np.save(folder / VECTORS, model.all_item_vectors())
    np.save(folder / POPULARITY, popularity.astype(np.float32))
    if ranker is not None:
        (folder / RANKER).write_text(ranker.to_json())
    if neighbours is not None:
        if neighbours.shape != (len(item_ids), len(item_ids)):
            raise ValueError("co-occurrence neighbours do not match the model's items")
        sp.save_npz(folder / NEIGHBOURS, neighbours.tocsr())


@dataclass
class ModelBundle:
    """A loaded model version, ready to score users."""

    version: str
    model: TwoTower
    item_ids: list[str]
    item_vectors: np.ndarray
    popularity: np.ndarray
    lineage: dict[str, Any]
    ranker: LinearRanker = DEFAULT_RANKER
    neighbours: sp.csr_matrix | None = None
    """Co-occurrence neighbours, rows in `item_ids` order (a non-DP model's; None for DP ones)."""

    @classmethod
    def load(cls, artifact: Published) -> ModelBundle:
        """Load a published version (weights only: no code is unpickled)."""
        saved = torch.load(artifact.path / WEIGHTS, weights_only=True)
        config = TwoTowerConfig(**saved["config"])
        state = saved["state"]
        model = TwoTower(state["content"][:-1].numpy(), config)
        loaded = model.load_state_dict(state, strict=False)
        if loaded.unexpected_keys or set(loaded.missing_keys) - PRIOR_KEYS:
            raise ValueError(
                f"model {artifact.version}: weights do not match the two-tower model "
                f"(missing {loaded.missing_keys}, unexpected {loaded.unexpected_keys})"
            )
        if loaded.missing_keys:  # saved before the popularity prior existed: no prior
            with torch.no_grad():
                model.popularity.weight.zero_()
        model.eval()
        ranker_file = artifact.path / RANKER
        neighbours_file = artifact.path / NEIGHBOURS
        item_ids = json.loads((artifact.path / ITEMS).read_text())
        neighbours = sp.load_npz(neighbours_file).tocsr() if neighbours_file.is_file() else None
        if neighbours is not None and neighbours.shape != (len(item_ids), len(item_ids)):
            raise ValueError(
                f"model {artifact.version}: co-occurrence neighbours do not match its items"
            )
        return cls(
            version=artifact.version,
            model=model,
            item_ids=item_ids,
            item_vectors=np.load(artifact.path / VECTORS),
            popularity=np.load(artifact.path / POPULARITY),
            lineage=artifact.manifest.get("metadata", {}),
            ranker=(
                LinearRanker.from_json(ranker_file.read_text())
                if ranker_file.is_file()
                else DEFAULT_RANKER
            ),
            neighbours=neighbours,
        )
