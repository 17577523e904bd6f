"""Cold-start benchmark (issue #4): small tenants from the federated backbone vs solo.

    scripts/bench coldstart [--quick]
    python -m atlasrec.benchmarks.coldstart [--quick] [--seeds 0 1 2 3 4] [--rounds 5] [--out FILE]

In a temporary ATLASREC_HOME (SQLite, embedded), the small tenants of the demo mix get the
backbone a federation really publishes (`server.embedded.run_embedded`: Flower rounds,
user-level DP-SGD per tenant charged to its ledger, CKKS-encrypted aggregation), opened the
way `atlasrec train` opens it (`atlasrec.pipelines.train.load_parent_backbone`):

- `ml-docs` (40 users, `global`, home `in`) is a sparse member of region `in`'s federation
  with `ml-comedy`; it starts from `in`'s backbone (the global tier's too, as a second row).
- `ml-western` (30 users) is `solo` in the demo, so by its policy it never gets a backbone.
  Here it is registered, counterfactually, as a **new** `regional` tenant of `us` after
  `us`'s federation (`ml-family`, `ml-action`) ran: pure transfer, none of its data is in
  the backbone.

Each small tenant is evaluated on the temporal leave-last-out split of its interactions
(`atlasrec.evaluation`, NDCG@10): only the split's train part is ingested, so neither the
federation nor any model sees a held-out interaction. Per seed, both federations run afresh
(in a copy of the ingested home, federation seed = seed), then the training `atlasrec
train` runs (DP at the default epsilon with the DP towers; and without DP, the retrieval
model without its ranker) from fresh towers (solo) and from the backbone, training seed =
seed; plus the backbone with no local training at all (zero-shot), content-pretrained towers and
popularity for reference. Medians over seeds, the ratio of medians backbone / solo (the
target: >= 1.3) and the per-seed ratios.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform as host
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlasrec.benchmarks.output import emit
from atlasrec.dataplane.training_data import TenantDataset as TrainingData
from atlasrec.dataplane.training_data import load_tenant_dataset
from atlasrec.datasets import build_movielens_tenant_mix
from atlasrec.datasets.spec import INTERACTIONS_HEADER, TenantDataset
from atlasrec.evaluation import Interactions, PopScorer, Recommender, evaluate
from atlasrec.evaluation.splits import Split, temporal_leave_last_out
from atlasrec.federation.store import global_store, open_backbone
from atlasrec.ingest import ingest
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
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, SharingPolicy
from server.embedded import run_embedded
from server.federation import FederationConfig

K = 10
TARGET_RATIO = 1.3
BACKBONE_ROWS = ("backbone", "global backbone")
ACTOR = "bench-coldstart"


@dataclass(frozen=True)
class Case:
    """A small tenant and how it meets the backbone."""

    tenant_id: str
    region: Region
    sharing: SharingPolicy
    federates: bool
    """True: a member of its region's federation (its train part); False: joins afterwards."""
    note: str


CASES = (
    Case(
        "ml-docs",
        Region.IN,
        SharingPolicy.GLOBAL,
        True,
        "demo policy (global, in): sparse member of region in's federation",
    ),
    Case(
        "ml-western",
        Region.US,
        SharingPolicy.REGIONAL,
        False,
        "counterfactual (demo: solo, sg): a new regional tenant of us, after us's federation",
    ),
)
PEERS = {Region.IN: ("ml-comedy",), Region.US: ("ml-family", "ml-action")}
"""The other tenants of each federation, with their demo policies and all their data."""


def read_log(ds: TenantDataset, item_ids: list[str]) -> Interactions:
    """A tenant's interactions CSV as `Interactions`, items indexed like `item_ids`."""
    index = {item: n for n, item in enumerate(item_ids)}
    users: dict[str, int] = {}
    with ds.interactions_csv.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return Interactions.from_arrays(
        [users.setdefault(r["user_id"], len(users)) for r in rows],
        [index[r["item_id"]] for r in rows],
        [int(r["timestamp"]) for r in rows],
        n_users=len(users),
        n_items=len(item_ids),
    )


def write_train_part(ds: TenantDataset, split: Split, item_ids: list[str], path: Path) -> int:
    """Write the rows of `ds` that are in `split.train` (the held-out pairs removed)."""
    index = {item: n for n, item in enumerate(item_ids)}
    users: dict[str, int] = {}
    held = {(u, int(items[0])) for u, items in split.test.items()}
    kept = 0
    with (
        ds.interactions_csv.open(encoding="utf-8", newline="") as src,
        path.open("w", encoding="utf-8", newline="") as dst,
    ):
        writer = csv.writer(dst, lineterminator="\n")
        writer.writerow(INTERACTIONS_HEADER)
        for row in csv.DictReader(src):
            user = users.setdefault(row["user_id"], len(users))
            if (user, index[row["item_id"]]) not in held:
                writer.writerow([row[h] for h in INTERACTIONS_HEADER])
                kept += 1
    return kept


def sorted_item_ids(ds: TenantDataset) -> list[str]:
    """The tenant's item ids in the order the platform's datasets use (sorted)."""
    with ds.items_csv.open(encoding="utf-8", newline="") as fh:
        return sorted(r["item_id"] for r in csv.DictReader(fh))


def register(
    platform: Platform, ds: TenantDataset, region: Region, sharing: SharingPolicy, inter: Path
) -> None:
    """Create the tenant and ingest its catalog and `inter` (embedding the catalog once)."""
    platform.create_tenant(ds.tenant_id, region=region, sharing=sharing, actor=ACTOR)
    scope = platform.scope(ds.tenant_id)
    plane = platform.plane(region)
    ingest(
        plane,
        scope,
        secret=platform.secret,
        actor=ACTOR,
        items=ds.items_csv,
        interactions=inter,
    )
    load_tenant_dataset(plane, scope, actor=ACTOR)  # embeds the catalog (cached)


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


def tenant_data(platform: Platform, case: Case, item_ids: list[str]) -> TrainingData:
    """The small tenant's ingested train part and content, as training reads them."""
    scope = platform.scope(case.tenant_id)
    data = load_tenant_dataset(platform.plane(scope.region), scope, actor=ACTOR)
    if data.item_ids != item_ids:  # the split's item indices must be the content's rows
        raise RuntimeError(f"{case.tenant_id}: the platform orders the catalog differently")
    return data


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


def setup(work: Path, datasets: dict[str, TenantDataset]) -> tuple[Path, dict[str, Split]]:
    """A home with every federating tenant ingested and embedded; the small tenants' splits."""
    splits: dict[str, Split] = {}
    for case in CASES:
        ds = datasets[case.tenant_id]
        splits[case.tenant_id] = temporal_leave_last_out(read_log(ds, sorted_item_ids(ds)))
        write_train_part(ds, splits[case.tenant_id], sorted_item_ids(ds), train_csv(work, ds))
    home = work / "base-home"
    platform = Platform(settings_at(home))
    try:
        for region, peers in PEERS.items():
            for tenant_id in peers:
                ds = datasets[tenant_id]
                register(platform, ds, region, ds.sharing, ds.interactions_csv)
        for case in CASES:
            if case.federates:
                ds = datasets[case.tenant_id]
                register(platform, ds, case.region, case.sharing, train_csv(work, ds))
    finally:
        platform.close()
    return home, splits


def train_csv(work: Path, ds: TenantDataset) -> Path:
    """Where a small tenant's train part is written."""
    return work / f"{ds.tenant_id}-train.csv"


def settings_at(home: Path) -> Settings:
    """Embedded settings in `home` (SQLite, local folders), whatever the environment says."""
    return Settings(
        home=home, control_db_url=None, region_db_urls={}, redis_url=None, broker_url=None
    )


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Set up once; per seed, federate in a fresh copy of the home, then train and evaluate."""
    started = time.perf_counter()
    datasets = {d.tenant_id: d for d in build_movielens_tenant_mix(work / "mix")}
    base, splits = setup(work, datasets)
    timings: dict[str, Any] = {"setup_ingest_embed_s": round(time.perf_counter() - started, 1)}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c.tenant_id: {} for c in CASES}
    lineages: dict[str, list[dict[str, Any]]] = {c.tenant_id: [] for c in CASES}
    federations: list[dict[str, Any]] = []
    fixed: dict[str, dict[str, float]] = {}
    for seed in args.seeds:
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
            federations.append({"seed": seed, **federate(platform, config)})
            for case in CASES:
                if not case.federates:  # a new tenant, registered after its region federated
                    ds = datasets[case.tenant_id]
                    register(platform, ds, case.region, case.sharing, train_csv(work, ds))
            for case in CASES:
                mark = time.perf_counter()
                data = tenant_data(platform, case, sorted_item_ids(datasets[case.tenant_id]))
                backbones, lineage = case_backbones(platform, case)
                spent = privacy_report(platform, case.tenant_id, actor=ACTOR)["epsilon_spent"]
                lineages[case.tenant_id].append(
                    {"seed": seed, "federation_epsilon_spent": spent, **lineage}
                )
                tenant = platform.control.get_tenant(case.tenant_id)
                recs = recommenders(data.content, seed, tenant.delta, backbones, not args.no_plain)
                if case.tenant_id not in fixed:
                    recs.update(references(data.content))
                split = splits[case.tenant_id]
                for name, r in evaluate(recs, split, K).items():
                    if name in ("popularity", "pretrained towers, no training"):
                        fixed.setdefault(case.tenant_id, {})[name] = ndcg(r)
                        continue
                    runs[case.tenant_id].setdefault(name, []).append(
                        {"seed": seed, "ndcg": ndcg(r), "fit_s": round(r["fit_seconds"], 2)}
                    )
                timings[f"seed{seed}_{case.tenant_id}_s"] = round(time.perf_counter() - mark, 1)
        finally:
            platform.close()
        shutil.rmtree(home, ignore_errors=True)
    cases = {}
    for case in CASES:
        ds, split = datasets[case.tenant_id], splits[case.tenant_id]
        medians = {
            n: statistics.median(r["ndcg"] for r in rs) for n, rs in runs[case.tenant_id].items()
        }
        ratios: dict[str, float | None] = {}
        paired: dict[str, list[float | None]] = {}
        for name, rows in runs[case.tenant_id].items():
            solo_name = "solo, DP" if name.endswith(", DP") else "solo, no DP"
            solo = medians.get(solo_name)
            if not name.startswith(BACKBONE_ROWS) or name.endswith("zero-shot") or solo is None:
                continue
            ratios[name] = medians[name] / solo if solo > 0 else None
            solos = {r["seed"]: r["ndcg"] for r in runs[case.tenant_id][solo_name]}
            paired[name] = [
                r["ndcg"] / solos[r["seed"]] if solos[r["seed"]] > 0 else None for r in rows
            ]
        cases[case.tenant_id] = {
            "scenario": case.note,
            "region": case.region.value,
            "sharing": case.sharing.value,
            "in_federation": case.federates,
            "users": ds.n_users,
            "items": ds.n_items,
            "interactions": ds.n_interactions,
            "tested_users": len(split.test),
            "train_interactions": len(split.train),
            "backbones_per_seed": lineages[case.tenant_id],
            "runs": runs[case.tenant_id],
            "fixed": fixed[case.tenant_id],
            "median_ndcg": medians,
            "ratio_to_solo": ratios,
            "ratio_to_solo_per_seed": paired,
            "target_met": {n: r is not None and r >= TARGET_RATIO for n, r in ratios.items()},
        }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()} {os.cpu_count()} cores, {host.platform()}",
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
            "runs": federations,
        },
        "cases": cases,
        "timings": timings,
        "total_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print the results as JSON (and write them with --out)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-coldstart")
    parser.add_argument("--quick", action="store_true", help="one seed, DP rows only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-epsilon", type=float, default=1.0)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--no-plain", action="store_true", help="skip the rows without DP")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.no_plain = args.seeds[:1], True
    work = Path(tempfile.mkdtemp(prefix="atlasrec-bench-coldstart-"))
    try:
        results = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(results, args.out)


if __name__ == "__main__":
    main()
