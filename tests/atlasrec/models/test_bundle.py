"""Model bundles: what `write_bundle` saves loads back, older bundles included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atlasrec.artifacts import Artifact
from atlasrec.models.bundle import PRIOR_KEYS, WEIGHTS, ModelBundle, write_bundle
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
