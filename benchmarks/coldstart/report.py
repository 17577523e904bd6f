"""The cold-start results: per case, medians over seeds and ratios backbone / solo."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from atlasrec.datasets.spec import TenantDataset
from atlasrec.evaluation.splits import Split
from atlasrec.pipelines.train import DEFAULT_EPSILON
from benchmarks.coldstart.fixtures import BACKBONE_ROWS, TARGET_RATIO, Case, K
from benchmarks.coldstart.runs import Collected
from benchmarks.stamp import stamp
from benchmarks.stats import median, ratio

Runs = dict[str, list[dict[str, Any]]]


def ratios_to_solo(
    runs: Runs, medians: dict[str, float]
) -> tuple[dict[str, float | None], dict[str, list[float | None]]]:
    """Backbone rows against solo (same DP setting): ratio of medians, and per seed."""
    ratios: dict[str, float | None] = {}
    paired: dict[str, list[float | None]] = {}
    for name, rows in runs.items():
        solo_name = "solo, DP" if name.endswith(", DP") else "solo, no DP"
        solo = medians.get(solo_name)
        if not name.startswith(BACKBONE_ROWS) or name.endswith("zero-shot") or solo is None:
            continue
        ratios[name] = ratio(medians[name], solo)
        solos = {r["seed"]: r["ndcg"] for r in runs[solo_name]}
        paired[name] = [ratio(r["ndcg"], solos[r["seed"]]) for r in rows]
    return ratios, paired


def case_summary(
    case: Case, ds: TenantDataset, split: Split, collected: Collected
) -> dict[str, Any]:
    """A case's scenario, sizes, runs, medians and ratios, and whether the target is met."""
    runs = collected.runs[case.tenant_id]
    medians = {n: median(r["ndcg"] for r in rs) for n, rs in runs.items()}
    ratios, paired = ratios_to_solo(runs, medians)
    return {
        "scenario": case.note,
        "region": case.region.value,
        "sharing": case.sharing.value,
        "in_federation": case.federates,
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "tested_users": len(split.test),
        "train_interactions": len(split.train),
        "backbones_per_seed": collected.lineages[case.tenant_id],
        "runs": runs,
        "fixed": collected.fixed[case.tenant_id],
        "median_ndcg": medians,
        "ratio_to_solo": ratios,
        "ratio_to_solo_per_seed": paired,
        "target_met": {n: r is not None and r >= TARGET_RATIO for n, r in ratios.items()},
    }


def results(
    args: argparse.Namespace, collected: Collected, cases: dict[str, Any], started: float
) -> dict[str, Any]:
    """The benchmark's JSON: stamp, settings, federations, cases, timings."""
    return {
        **stamp(),
        "load_average_at_end": os.getloadavg(),
        "k": K,
        "split": "temporal-leave-last-out",
        "dp_epsilon": DEFAULT_EPSILON,
        "seeds": args.seeds,
        "target_ratio": TARGET_RATIO,
        "federation": {
            "rounds": args.rounds,
            "round_epsilon": args.round_epsilon,
            "local_epochs": args.local_epochs,
            "encrypted": True,
            "runs": collected.federations,
        },
        "cases": cases,
        "timings": collected.timings,
        "total_s": round(time.perf_counter() - started, 1),
    }
