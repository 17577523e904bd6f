"""Per seed: every region's federation, then each case's models trained and evaluated."""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlasrec.datasets.spec import TenantDataset
from atlasrec.evaluation import PopScorer, Recommender, evaluate
from atlasrec.evaluation.splits import Split
from atlasrec.federation.store import global_store, open_backbone
from atlasrec.models.recommender import TwoTowerRecommender
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.privacy_report import privacy_report
from atlasrec.pipelines.train import (
    DEFAULT_EPSILON,
    backbone_config,
    dp_config,
    load_parent_backbone,
)
from atlasrec.platform import Platform
from atlasrec.tenancy import SharingPolicy
from benchmarks.coldstart.fixtures import (
    ACTOR,
    CASES,
    PEERS,
    Case,
    K,
    register,
    settings_at,
    sorted_item_ids,
    tenant_data,
    train_csv,
)
from server.embedded import run_embedded
from server.federation import FederationConfig


def recommenders(
    content: np.ndarray,
    seed: int,
    delta: float,
    backbones: dict[str, dict[str, torch.Tensor]],
    no_dp: bool,
) -> dict[str, Recommender]:
    """One seed's models: solo and from each backbone, with DP (and without), and zero-shot."""
    base = TwoTowerConfig(seed=seed)
    dp = dp_config(base)
    recs: dict[str, Recommender] = {
        "solo, DP": TwoTowerRecommender(content, dp, epsilon=DEFAULT_EPSILON, delta=delta)
    }
    for name, state in backbones.items():
        recs[f"{name}, DP"] = TwoTowerRecommender(
            content, backbone_config(dp), epsilon=DEFAULT_EPSILON, delta=delta, init_backbone=state
        )
    if no_dp:
        recs["solo, no DP"] = TwoTowerRecommender(content, base)
        recs["solo, no DP, backbone sizes"] = TwoTowerRecommender(content, backbone_config(base))
        for name, state in backbones.items():
            recs[f"{name}, no DP"] = TwoTowerRecommender(
                content, backbone_config(base), init_backbone=state
            )
    frozen = replace(dp, epochs=0)
    for name, state in backbones.items():
        recs[f"{name}, zero-shot"] = TwoTowerRecommender(content, frozen, init_backbone=state)
    return recs


def references(content: np.ndarray) -> dict[str, Recommender]:
    """Rows without a seed or a backbone: popularity, towers as initialised (no training)."""
    frozen = replace(dp_config(TwoTowerConfig()), epochs=0)
    towers = TwoTowerRecommender(content, frozen)
    return {"popularity": PopScorer(), "pretrained towers, no training": towers}


def ndcg(report: Any) -> float:
    """NDCG@K over all tested users of one recommender's report."""
    value = report["all"]["ndcg"]
    assert value is not None  # every split here has tested users
    return float(value)


def case_backbones(
    platform: Platform, case: Case
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """The backbone `atlasrec train` would start from (and a global tenant's fallback)."""
    tenant = platform.control.get_tenant(case.tenant_id)
    parent = load_parent_backbone(platform, tenant)
    if parent is None:
        raise RuntimeError(f"{case.tenant_id}: no backbone to start from")
    backbones, lineage = {"backbone": parent.state}, {"backbone": parent.lineage()}
    if case.sharing is SharingPolicy.GLOBAL:
        tier = global_store(platform.settings).latest()
        if tier is not None:  # the global tier, measured as a second starting point
            backbones["global backbone"] = open_backbone(platform.settings, tier)
            lineage["global backbone"] = {
                "version": tier.version,
                "contributors": tier.metadata["contributors"],
                "shares": tier.metadata["shares"],
            }
    return backbones, lineage


def federate(platform: Platform, config: FederationConfig) -> dict[str, Any]:
    """Run every region's federation (then the global tier); what each one did."""
    out = {}
    for region in PEERS:
        mark = time.perf_counter()
        result = run_embedded(platform, region, config, actor=ACTOR)
        out[region.value] = {
            "seconds": round(time.perf_counter() - mark, 1),
            "run_id": result.run_id,
            "rounds_done": result.rounds_done,
            "backbone_version": result.backbone_version,
            "epsilon_per_round": [
                {t: round(p["epsilon"], 4) for t, p in sorted(r["participants"].items())}
                for r in result.rounds
            ],
            "refused_dropped_failed": [
                {**r["refused"], **r["dropped"], **r["failed"]} for r in result.rounds
            ],
        }
    return out


FIXED_ROWS = ("popularity", "pretrained towers, no training")
"""Rows without a seed: measured once per case."""


@dataclass
class Collected:
    """What the seeds produce, per case: model runs, backbones used, fixed rows; timings."""

    timings: dict[str, Any]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = field(
        default_factory=lambda: {c.tenant_id: {} for c in CASES}
    )
    lineages: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {c.tenant_id: [] for c in CASES}
    )
    federations: list[dict[str, Any]] = field(default_factory=list)
    fixed: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate_case(
    platform: Platform,
    case: Case,
    seed: int,
    data: tuple[TenantDataset, Split],
    plain: bool,
    collected: Collected,
) -> None:
    """Train one seed's models of a case (from its backbones, and solo) and evaluate them."""
    mark = time.perf_counter()
    ds, split = data
    training = tenant_data(platform, case, sorted_item_ids(ds))
    backbones, lineage = case_backbones(platform, case)
    spent = privacy_report(platform, case.tenant_id, actor=ACTOR)["epsilon_spent"]
    collected.lineages[case.tenant_id].append(
        {"seed": seed, "federation_epsilon_spent": spent, **lineage}
    )
    tenant = platform.control.get_tenant(case.tenant_id)
    recs = recommenders(training.content, seed, tenant.delta, backbones, plain)
    if case.tenant_id not in collected.fixed:
        recs.update(references(training.content))
    for name, r in evaluate(recs, split, K).items():
        if name in FIXED_ROWS:
            collected.fixed.setdefault(case.tenant_id, {})[name] = ndcg(r)
            continue
        collected.runs[case.tenant_id].setdefault(name, []).append(
            {"seed": seed, "ndcg": ndcg(r), "fit_s": round(r["fit_seconds"], 2)}
        )
    collected.timings[f"seed{seed}_{case.tenant_id}_s"] = round(time.perf_counter() - mark, 1)


def run_seed(
    seed: int,
    args: argparse.Namespace,
    work: Path,
    base: Path,
    inputs: tuple[dict[str, TenantDataset], dict[str, Split]],
    collected: Collected,
) -> None:
    """In a fresh copy of the base home: federate, register late joiners, evaluate each case."""
    datasets, splits = inputs
    home = work / f"home-seed{seed}"
    shutil.copytree(base, home)
    platform = Platform(settings_at(home))
    try:
        config = FederationConfig(
            rounds=args.rounds,
            round_epsilon=args.round_epsilon,
            local_epochs=args.local_epochs,
            seed=seed,
        )
        collected.federations.append({"seed": seed, **federate(platform, config)})
        for case in CASES:
            if not case.federates:  # a new tenant, registered after its region federated
                ds = datasets[case.tenant_id]
                register(platform, ds, case.region, case.sharing, train_csv(work, ds))
        for case in CASES:
            pair = (datasets[case.tenant_id], splits[case.tenant_id])
            evaluate_case(platform, case, seed, pair, not args.no_plain, collected)
    finally:
        platform.close()
    shutil.rmtree(home, ignore_errors=True)
