"""A trained model as a published artifact: weights, catalog order, item vectors, lineage."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from atlasrec.intents import ORDERS, DefaultOrder
from atlasrec.models.ease_profile import ProfileWeights
from atlasrec.models.ranking.ranker import DEFAULT_RANKER, LinearRanker
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig

KIND = "two-tower"
WEIGHTS, ITEMS, VECTORS, POPULARITY = "model.pt", "items.json", "item_vectors.npy", "popularity.npy"
RANKER, NEIGHBOURS = "ranker.json", "neighbours.npz"
PROFILE, ORDER = "profile.npz", "order.json"
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
    profile: ProfileWeights | None = None,
    order: DefaultOrder | None = None,
) -> None:
    """Write a model's files into an artifact's staging folder.

    `neighbours` (`atlasrec.models.cooccurrence`): a non-DP model's (the ranker's feature
    and source where it weighs them). `profile` (`atlasrec.models.ease_profile`): its dense
    EASE head, the `profile` and `blend` orders' pooling. `order`: the order served without
    an intent (`atlasrec.models.ranking.default_order`).
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
    if profile is not None:
        if profile.size != len(item_ids):
            raise ValueError("profile weights do not match the model's items")
        np.savez(folder / PROFILE, head=profile.head, weights=profile.weights)
    if order is not None:
        (folder / ORDER).write_text(json.dumps(asdict(order)))


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
    profile: ProfileWeights | None = None
    """The dense EASE head, rows in `item_ids` order (a non-DP model's; None for DP ones)."""
    order: DefaultOrder = field(default_factory=DefaultOrder)
    """The order served without an intent (`next` for versions saved before the choice)."""

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
            profile=_load_profile(artifact, len(item_ids)),
            order=_load_order(artifact),
        )


def _load_profile(artifact: Published, size: int) -> ProfileWeights | None:
    """The version's dense EASE head, if it has one."""
    path = artifact.path / PROFILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as saved:
        try:
            return ProfileWeights(saved["head"], saved["weights"], size)
        except ValueError as exc:
            raise ValueError(f"model {artifact.version}: {exc}") from None


def _load_order(artifact: Published) -> DefaultOrder:
    """The version's default order (`next` for versions saved before the choice)."""
    path = artifact.path / ORDER
    if not path.is_file():
        return DefaultOrder()
    saved = json.loads(path.read_text())
    order = DefaultOrder(
        saved["order"], float(saved["weight"]), tuple(saved.get("below_popularity", ()))
    )
    if order.order not in ORDERS or not 0.0 <= order.weight <= 1.0:
        raise ValueError(f"model {artifact.version}: unknown default order {saved!r}")
    return order
