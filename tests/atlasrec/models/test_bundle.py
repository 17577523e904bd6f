"""Model bundles: what `write_bundle` saves loads back, older bundles included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from atlasrec.artifacts import Artifact
from atlasrec.models.bundle import NEIGHBOURS, PRIOR_KEYS, WEIGHTS, ModelBundle, write_bundle
from atlasrec.models.cooccurrence import item_neighbours
from atlasrec.models.ranking.features import FEATURES
from atlasrec.models.ranking.ranker import LinearRanker
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig
from atlasrec.tenancy import Region

CONFIG = TwoTowerConfig(dim=8, hidden=16, history=5)


def saved(tmp_path: Path, model: TwoTower) -> Artifact:
    write_bundle(tmp_path, model, [f"i{k}" for k in range(model.n_items)], np.ones(model.n_items))
    return Artifact("shop", Region.EU, "two-tower", "v1", tmp_path, {"metadata": {}})


def test_a_bundle_keeps_the_popularity_prior(tmp_path: Path) -> None:
    model = TwoTower(np.random.default_rng(0).normal(size=(6, 12)).astype(np.float32), CONFIG)
    model.set_popularity(np.arange(6.0))
    with torch.no_grad():
        model.popularity.weight.fill_(0.7)
    loaded = ModelBundle.load(saved(tmp_path, model)).model
    assert loaded.popularity_weight == pytest.approx(0.7)
    assert torch.equal(loaded.log_popularity, model.log_popularity)


def test_a_bundle_saved_before_the_prior_loads_without_one(tmp_path: Path) -> None:
    model = TwoTower(np.random.default_rng(0).normal(size=(6, 12)).astype(np.float32), CONFIG)
    artifact = saved(tmp_path, model)
    weights = torch.load(tmp_path / WEIGHTS, weights_only=True)
    for key in PRIOR_KEYS:
        del weights["state"][key]
    torch.save(weights, tmp_path / WEIGHTS)
    assert ModelBundle.load(artifact).model.popularity_weight == 0.0

    del weights["state"]["residual.weight"]  # anything else missing is a damaged bundle
    torch.save(weights, tmp_path / WEIGHTS)
    with pytest.raises(ValueError, match="do not match"):
        ModelBundle.load(artifact)


def test_a_bundle_keeps_its_ranker_and_cooccurrence_neighbours(tmp_path: Path) -> None:
    model = TwoTower(np.random.default_rng(0).normal(size=(6, 12)).astype(np.float32), CONFIG)
    ids = [f"i{k}" for k in range(6)]
    neighbours = item_neighbours([np.array([0, 1, 2]), np.array([1, 2, 5])], 6)
    weights = tuple(float(n) for n in range(len(FEATURES)))
    ranker = LinearRanker(weights=weights, fitted=True)
    write_bundle(tmp_path, model, ids, np.ones(6), ranker, neighbours)
    loaded = ModelBundle.load(Artifact("shop", Region.EU, "two-tower", "v1", tmp_path, {}))
    assert loaded.ranker == ranker and loaded.neighbours is not None
    assert (loaded.neighbours != neighbours).nnz == 0
    with pytest.raises(ValueError, match="do not match the model's items"):
        write_bundle(tmp_path, model, ids, np.ones(6), ranker, item_neighbours([], 5))
    sp.save_npz(tmp_path / NEIGHBOURS, item_neighbours([], 5))  # a damaged bundle
    with pytest.raises(ValueError, match="v1: co-occurrence neighbours do not match"):
        ModelBundle.load(Artifact("shop", Region.EU, "two-tower", "v1", tmp_path, {}))


def test_a_ranker_saved_before_a_feature_existed_loads_without_it() -> None:
    old = {
        "features": ["retrieval_score", "popularity", "recency", "category_affinity"],
        "weights": [0.5, 0.2, 0.3, 0.1],
        "mean": [0.1, 1.0, 0.2, 0.3],
        "scale": [0.5, 2.0, 0.4, 0.3],
        "fitted": True,
        "details": {},
    }
    ranker = LinearRanker.from_json(json.dumps(old))
    co = FEATURES.index("cooccurrence")
    assert ranker.weights[co] == 0.0 and ranker.scale[co] == 1.0 and not ranker.uses_cooccurrence
    assert [ranker.weights[FEATURES.index(f)] for f in old["features"]] == old["weights"]
    with pytest.raises(ValueError, match="different feature set"):
        LinearRanker.from_json(json.dumps({**old, "features": ["retrieval_score", "clicks"]}))
    with pytest.raises(ValueError, match="must be 4 numbers"):
        LinearRanker.from_json(json.dumps({**old, "weights": [1.0]}))
