"""The default order (a request without an intent) against the baselines, by data set (#18).

Data sets: ml-latest-small, each tenant of the demo's MovieLens mix
(`build_movielens_tenant_mix`), and synthetic retail tenants (`generate_synthetic_tenant`)
of `SYNTHETIC_USERS` users over `SYNTHETIC_ITEMS` items, `PER_USER` interactions per user on
average (activity exponent `ACTIVITY_EXPONENT`). Content embeddings are MiniLM's of the item
texts (cached under the temp dir, keyed by data set and the items file's digest).

On both splits (temporal leave-last-out, random 25% per user), at most `MAX_TEST_USERS`
tested users (a fixed random sample): NDCG@10 and Recall@10 of popularity, dense EASE (where
the catalog fits `EASEConfig().max_items`), ALS (fitted once: they do not depend on the
seed), and of one `TwoTowerRankerRecommender` fit per seed served three ways: the `next`
and `profile` intents and the default order (`intent=None`). Medians over seeds, the chosen
order per seed, the fit's wall and CPU seconds, and the ratios of the default's median NDCG
to EASE, to the best baseline and to popularity. The targets: >= 1.0x EASE on the random
split and >= 1.0x the best baseline on the temporal split. With `--dp-epsilon E`, what
`atlasrec train --epsilon E` publishes too (`DpModelRecommender`, one fit per seed), with
its ratios to the non-DP default and to popularity. JSON on stdout (and in `--out`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

import atlasrec
from atlasrec.datasets import MOVIELENS_DIR, build_movielens_tenant_mix
from atlasrec.datasets.spec import TenantDataset
from atlasrec.datasets.synthetic import generate_synthetic_tenant
from atlasrec.evaluation import (
    ALS,
    EASE,
    EASEConfig,
    Interactions,
    PopScorer,
    Recommender,
    RecommenderReport,
    Split,
    evaluate,
    random_user_split,
    temporal_leave_last_out,
)
from atlasrec.intents import Intent
from atlasrec.models.dp_recommender import DpModelRecommender
from atlasrec.models.ranking.features import category_codes
from atlasrec.models.ranking.recommender import TwoTowerRankerRecommender
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import dp_config
from benchmarks.models.fixtures import (
    ACTIVITY_EXPONENT,
    CONTENT_CACHE,
    PER_USER,
    K,
    content_embeddings,
    movielens,
    movielens_categories,
    retail_spec,
)
from benchmarks.output import emit
from benchmarks.stamp import stamp
from benchmarks.stats import median, ratio

SYNTHETIC_USERS = {"synthetic-1k": 1_000, "synthetic-10k": 10_000, "synthetic-100k": 100_000}
DATASETS = ("ml-latest-small", "ml-tenants", *SYNTHETIC_USERS)
DEFAULT_DATASETS = DATASETS[:-1]
"""What runs unless `--datasets` names others: synthetic-100k only when named (on 2 cores one
of its fits takes hours)."""
SYNTHETIC_ITEMS = 3_000
MAX_TEST_USERS = 10_000
SEEDS = (0, 1, 2)
DELTA = 1e-5
ORDERS: dict[str, Intent | None] = {"next": "next", "profile": "profile", "default": None}
"""The two-tower+ranker fit served for each intent; `default`: a request without one."""


@dataclass(frozen=True)
class Dataset:
    """One data set: its interactions, item content embeddings and category codes."""

    name: str
    data: Interactions
    content: np.ndarray
    codes: np.ndarray


def content_cache(tenant_id: str, items_csv: Path) -> Path:
    """Where a tenant's content embeddings are kept: by id and the items file's digest.

    The synthetic tenants of every size share one catalog, so one cache file.
    """
    digest = hashlib.sha256(items_csv.read_bytes()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"atlasrec-bench-content-{tenant_id}-{digest}.npy"


def from_folder(name: str, ds: TenantDataset) -> Dataset:
    """A generated tenant (MovieLens mix or synthetic), read with pyarrow."""
    with ds.items_csv.open(encoding="utf-8") as fh:
        items = list(csv.DictReader(fh))
    index = {m["item_id"]: n for n, m in enumerate(items)}
    columns = pcsv.ConvertOptions(include_columns=["user_id", "item_id", "timestamp"])
    table = pcsv.read_csv(ds.interactions_csv, convert_options=columns)
    users = pc.dictionary_encode(table["user_id"].cast("string")).combine_chunks()
    item_index = pc.index_in(table["item_id"].cast("string"), value_set=pa.array(list(index)))
    data = Interactions.from_arrays(
        users.indices.to_numpy().astype(np.int64),
        item_index.to_numpy().astype(np.int64),
        table["timestamp"].to_numpy().astype(np.int64),
        n_users=len(users.dictionary),
        n_items=len(items),
    )
    content = content_embeddings(items, content_cache(ds.tenant_id, ds.items_csv))
    return Dataset(name, data, content, category_codes(movielens_categories(ds.items_csv)))


def synthetic(name: str, n_users: int, folder: Path, n_items: int = SYNTHETIC_ITEMS) -> Dataset:
    """A synthetic retail tenant of `n_users` users (one catalog for every size)."""
    spec = retail_spec("bench-default-order", n_users, n_items)
    return from_folder(name, generate_synthetic_tenant(spec, folder / name))


def datasets(names: Sequence[str], folder: Path) -> Iterator[Dataset]:
    """The named data sets in order (`ml-tenants`: each tenant of the mix), built in `folder`."""
    for name in names:
        if name == "ml-latest-small":
            data, content = movielens(
                MOVIELENS_DIR / "movies.csv", MOVIELENS_DIR / "ratings.csv", CONTENT_CACHE
            )
            codes = category_codes(movielens_categories(MOVIELENS_DIR / "movies.csv"))
            yield Dataset(name, data, content, codes)
        elif name == "ml-tenants":
            for ds in build_movielens_tenant_mix(folder / name):
                yield from_folder(ds.tenant_id, ds)
        else:
            yield synthetic(name, SYNTHETIC_USERS[name], folder)


def sampled(split: Split, limit: int = MAX_TEST_USERS) -> Split:
    """`split` with at most `limit` tested users (a fixed random sample)."""
    users = split.test_users()
    if users.size <= limit:
        return split
    kept = np.random.default_rng(0).choice(users, limit, replace=False)
    return Split(split.name, split.train, {int(u): split.test[int(u)] for u in kept})


def baselines(n_items: int) -> dict[str, Recommender]:
    """Popularity, dense EASE (where the catalog fits it) and ALS."""
    recs: dict[str, Recommender] = {"popularity": PopScorer()}
    if n_items <= EASEConfig().max_items:
        recs["ease"] = EASE()
    recs["als"] = ALS()
    return recs


def metrics(report: RecommenderReport) -> dict[str, Any]:
    """NDCG@K, Recall@K (all tested users) and fit seconds of one recommender."""
    return {
        "ndcg": report["all"]["ndcg"],
        "recall": report["all"]["recall"],
        "fit_s": round(report["fit_seconds"], 2),
    }


def seed_run(ds: Dataset, split: Split, config: TwoTowerConfig) -> dict[str, Any]:
    """One two-tower+ranker fit on `split.train`, served for each of `ORDERS`."""
    model = TwoTowerRankerRecommender(ds.content, ds.codes, config)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(split.train)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    recs: dict[str, Recommender] = {n: model.for_intent(i) for n, i in ORDERS.items()}
    report = evaluate(recs, split, K)  # every intent reuses the fit
    assert model.fitted is not None
    lineage = model.fitted.lineage
    chosen = lineage["default_order"]
    return {
        "seed": config.seed,
        **{
            n: {"ndcg": report[n]["all"]["ndcg"], "recall": report[n]["all"]["recall"]}
            for n in ORDERS
        },
        "fit_s": round(wall, 2),
        "fit_cpu_s": round(cpu, 2),
        "fit_parts_s": {
            "prefix_training": lineage["prefix_train_seconds"],
            "ranker_lists_and_fit": lineage["fit_seconds"],
            "retraining": round(model.fitted.report.seconds, 2),
            "total": lineage["total_seconds"],
        },
        "chosen": {k: chosen.get(k) for k in ("chosen", "weight", "reason", "below_popularity")},
        "validation_ndcg": chosen.get("ndcg_at_10"),
    }


def dp_run(ds: Dataset, split: Split, config: TwoTowerConfig, epsilon: float) -> dict[str, Any]:
    """What `atlasrec train --epsilon` publishes, fitted on `split.train` (`DpModelRecommender`)."""
    dp = dp_config(config)
    model = DpModelRecommender(ds.content, ds.codes, dp, epsilon=epsilon, delta=DELTA)
    report = evaluate({"dp": model}, split, K)["dp"]
    assert model.fitted is not None
    chosen = model.fitted.order_lineage
    return {
        "seed": config.seed,
        "ndcg": report["all"]["ndcg"],
        "recall": report["all"]["recall"],
        "fit_s": round(report["fit_seconds"], 2),
        "chosen": {k: chosen.get(k) for k in ("chosen", "reason", "dp_validation")},
    }


def ratios(rows: dict[str, Any], random_split: bool) -> dict[str, Any]:
    """The default's median NDCG over EASE, the best baseline and popularity; the target's."""
    default = rows["default"]["ndcg"]
    fitted = [n for n in ("popularity", "ease", "als") if n in rows]
    best = max(fitted, key=lambda n: rows[n]["ndcg"])
    out: dict[str, Any] = {
        "default/ease": ratio(default, rows["ease"]["ndcg"]) if "ease" in rows else None,
        "default/best_baseline": ratio(default, rows[best]["ndcg"]),
        "best_baseline": best,
        "default/popularity": ratio(default, rows["popularity"]["ndcg"]),
    }
    if "dp" in rows:
        out["dp/default"] = ratio(rows["dp"]["ndcg"], default)
        out["dp/popularity"] = ratio(rows["dp"]["ndcg"], rows["popularity"]["ndcg"])
    target = "default/ease" if random_split else "default/best_baseline"
    value = out[target]
    out["target"] = {
        "ratio": target,
        "value": value,
        "met": None if value is None else value >= 1.0,
    }
    return out


def measure_split(
    ds: Dataset,
    split: Split,
    seeds: Sequence[int],
    config: TwoTowerConfig,
    dp_epsilon: float | None = None,
    dp_only: bool = False,
) -> dict[str, Any]:
    """Baselines (fitted once) and the two-tower+ranker per seed on one split: medians, ratios.

    Each seed's fit uses `config` with that `seed`; with `dp_epsilon`, so does a DP run's
    (`dp_only`: the DP runs and the baselines alone).
    """
    report = evaluate(baselines(ds.data.n_items), split, K)
    rows: dict[str, Any] = {name: metrics(r) for name, r in report.items()}
    if "ease" not in rows:
        rows["ease"] = {"skipped": f"{ds.data.n_items} items > EASEConfig().max_items"}
    runs = [] if dp_only else [seed_run(ds, split, replace(config, seed=seed)) for seed in seeds]
    for name in ORDERS if runs else ():
        rows[name] = {
            "ndcg": median(r[name]["ndcg"] for r in runs),
            "recall": median(r[name]["recall"] for r in runs),
            "ndcg_runs": [r[name]["ndcg"] for r in runs],
        }
    dp_runs = []
    if dp_epsilon is not None:
        dp_runs = [dp_run(ds, split, replace(config, seed=seed), dp_epsilon) for seed in seeds]
        rows["dp"] = {
            "epsilon": dp_epsilon,
            "ndcg": median(r["ndcg"] for r in dp_runs),
            "recall": median(r["recall"] for r in dp_runs),
            "ndcg_runs": [r["ndcg"] for r in dp_runs],
        }
    scored = {n: r for n, r in rows.items() if "ndcg" in r}
    out: dict[str, Any] = {"dp_runs": dp_runs, "test_users": len(split.test), **rows}
    if not runs:  # --dp-only
        return {
            **out,
            "ratios": {"dp/popularity": ratio(rows["dp"]["ndcg"], rows["popularity"]["ndcg"])},
        }
    return {
        **out,
        "fit_s": median(r["fit_s"] for r in runs),
        "fit_s_runs": [r["fit_s"] for r in runs],
        "fit_cpu_s": median(r["fit_cpu_s"] for r in runs),
        "chosen": [{"seed": r["seed"], **r["chosen"]} for r in runs],
        "ratios": ratios(scored, random_split=split.name.startswith("random")),
        "runs": runs,
    }


def measure(
    ds: Dataset,
    seeds: Sequence[int],
    config: TwoTowerConfig | None = None,
    dp_epsilon: float | None = None,
    dp_only: bool = False,
) -> dict[str, Any]:
    """Both splits of one data set (the two-tower's `config`: the default one)."""
    started = time.perf_counter()
    out: dict[str, Any] = {
        "users": ds.data.n_users,
        "items": ds.data.n_items,
        "interactions": len(ds.data),
    }
    for split in (temporal_leave_last_out(ds.data), random_user_split(ds.data)):
        chosen = config or TwoTowerConfig()
        out[split.name] = measure_split(ds, sampled(split), seeds, chosen, dp_epsilon, dp_only)
    out["total_s"] = round(time.perf_counter() - started, 1)
    return out


def source_digest() -> str:
    """SHA-256 (12 hex digits) of the `atlasrec` package's Python sources: the code measured."""
    digest = hashlib.sha256()
    root = Path(atlasrec.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def default_order_study(
    names: Sequence[str],
    seeds: Sequence[int],
    dp_epsilon: float | None = None,
    dp_only: bool = False,
) -> dict[str, Any]:
    """Every named data set, both splits (see the module docstring)."""
    results: dict[str, Any] = {
        **stamp(),
        "atlasrec_source_sha256": source_digest(),
        "k": K,
        "seeds": list(seeds),
        "synthetic": {
            "items": SYNTHETIC_ITEMS,
            "interactions_per_user": PER_USER,
            "activity_exponent": ACTIVITY_EXPONENT,
        },
        "max_test_users": MAX_TEST_USERS,
        "datasets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for ds in datasets(names, Path(tmp)):
            results["datasets"][ds.name] = measure(
                ds, seeds, dp_epsilon=dp_epsilon, dp_only=dp_only
            )
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-default-order")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DEFAULT_DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument(
        "--dp-epsilon", type=float, help="also fit what `train --epsilon` publishes, per seed"
    )
    parser.add_argument("--dp-only", action="store_true", help="with --dp-epsilon: DP runs alone")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the study and print its results as JSON (and write them with --out)."""
    args = parse_args(argv)
    started = time.perf_counter()
    results = default_order_study(args.datasets, args.seeds, args.dp_epsilon, args.dp_only)
    results["total_s"] = round(time.perf_counter() - started, 1)
    emit(results, args.out)


if __name__ == "__main__":
    main()
