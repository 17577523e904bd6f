"""The default-order benchmark on a tiny synthetic tenant: its data, report and ratios."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasrec.evaluation import EASEConfig, temporal_leave_last_out
from atlasrec.models.two_tower import TwoTowerConfig
from benchmarks.models import default_order as bench
from benchmarks.models.fixtures import PER_USER

TINY = TwoTowerConfig(dim=8, hidden=16, history=10, positives=4, negatives=16, epochs=2)
"""A two-tower small enough to fit in a second (the benchmark itself runs the default)."""
SPLITS = ("temporal-leave-last-out", "random-user(test_fraction=0.25, seed=0)")


def fake_content(items: list[dict[str, str]], cache: Path) -> np.ndarray:
    """Seeded unit vectors in place of the text encoder (too slow for a unit test)."""
    vectors = np.random.default_rng(0).normal(size=(len(items), 24)).astype(np.float32)
    unit: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> bench.Dataset:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "content_embeddings", fake_content)
        return bench.synthetic("tiny", 60, tmp_path_factory.mktemp("tenant"), n_items=40)


@pytest.fixture(scope="module")
def report(tiny: bench.Dataset) -> dict[str, Any]:
    return bench.measure(tiny, [0], TINY, dp_epsilon=8.0)


def test_a_generated_tenant_is_read_whole(tiny: bench.Dataset) -> None:
    data = tiny.data
    assert (data.n_users, data.n_items, len(data)) == (60, 40, PER_USER * 60)
    assert tiny.content.shape == (40, 24) and tiny.codes.shape == (40,)


def test_item_indices_follow_the_items_file(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "content_embeddings", fake_content)
        ds = bench.synthetic("rows", 30, tmp_path, n_items=25)
    with (tmp_path / "rows" / "bench-default-order" / "interactions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    counts = Counter(int(r["item_id"][1:]) for r in rows)  # p000007 is the 8th item row
    assert np.bincount(ds.data.items, minlength=25).tolist() == [counts[i] for i in range(25)]
    assert ds.data.n_users == len({r["user_id"] for r in rows})


def test_every_order_and_baseline_is_reported_on_both_splits(report: dict[str, Any]) -> None:
    assert (report["users"], report["items"]) == (60, 40)
    for split in SPLITS:
        rows = report[split]
        for name in ("popularity", "ease", "als", "next", "profile", "default"):
            assert 0.0 <= rows[name]["ndcg"] <= 1.0 and 0.0 <= rows[name]["recall"] <= 1.0
        (run,) = rows["runs"]
        for name in bench.ORDERS:  # the median of one seed is that seed's figure
            assert rows[name]["ndcg"] == run[name]["ndcg"] and rows[name]["ndcg_runs"] == [
                run[name]["ndcg"]
            ]
        assert rows["chosen"][0]["seed"] == 0
        assert rows["chosen"][0]["chosen"] in ("next", "profile", "blend", "popularity")
        assert rows["fit_s"] == run["fit_s"] > 0 and rows["fit_cpu_s"] == run["fit_cpu_s"] > 0
        assert run["fit_parts_s"]["total"] > 0


def test_the_ratios_are_the_default_over_each_baseline(report: dict[str, Any]) -> None:
    for split, target in zip(SPLITS, ("default/best_baseline", "default/ease"), strict=True):
        rows = report[split]
        default = rows["default"]["ndcg"]
        best = max(("popularity", "ease", "als"), key=lambda n: rows[n]["ndcg"])
        ratios = rows["ratios"]
        assert ratios["best_baseline"] == best
        assert ratios["default/best_baseline"] == pytest.approx(default / rows[best]["ndcg"])
        assert ratios["default/ease"] == pytest.approx(default / rows["ease"]["ndcg"])
        assert ratios["default/popularity"] == pytest.approx(default / rows["popularity"]["ndcg"])
        assert ratios["target"] == {
            "ratio": target,
            "value": ratios[target],
            "met": ratios[target] >= 1.0,
        }


def test_what_a_dp_run_publishes_is_reported_beside_the_default(report: dict[str, Any]) -> None:
    for split in SPLITS:
        rows = report[split]
        (run,) = rows["dp_runs"]
        assert rows["dp"]["ndcg"] == run["ndcg"] and rows["dp"]["epsilon"] == 8.0
        assert run["chosen"]["chosen"] in ("next", "profile", "popularity")
        assert run["chosen"]["dp_validation"]["users"] > 0  # 60 users: a validation release
        ratios = rows["ratios"]
        assert ratios["dp/default"] == pytest.approx(run["ndcg"] / rows["default"]["ndcg"])
        assert ratios["dp/popularity"] == pytest.approx(run["ndcg"] / rows["popularity"]["ndcg"])


def test_dp_only_fits_the_dp_runs_and_the_baselines_alone(tiny: bench.Dataset) -> None:
    rows = bench.measure(tiny, [0], TINY, dp_epsilon=8.0, dp_only=True)[SPLITS[0]]
    assert "default" not in rows and rows["dp"]["ndcg_runs"] == [rows["dp_runs"][0]["ndcg"]]
    expected = rows["dp"]["ndcg"] / rows["popularity"]["ndcg"]
    assert rows["ratios"] == {"dp/popularity": pytest.approx(expected)}


def test_without_ease_the_random_target_is_not_judged() -> None:
    rows = {
        "popularity": {"ndcg": 0.1},
        "als": {"ndcg": 0.3},
        "default": {"ndcg": 0.2},
    }
    ratios = bench.ratios(rows, random_split=True)
    assert ratios["default/ease"] is None and ratios["target"]["met"] is None
    assert ratios["best_baseline"] == "als"
    assert ratios["default/best_baseline"] == pytest.approx(0.2 / 0.3)
    assert "ease" not in bench.baselines(EASEConfig().max_items + 1)
    assert "ease" in bench.baselines(EASEConfig().max_items)


def test_at_most_the_limit_of_users_is_tested(tiny: bench.Dataset) -> None:
    split = temporal_leave_last_out(tiny.data)
    kept = bench.sampled(split, 25)
    assert len(kept.test) == 25 and kept.train is split.train
    assert all(np.array_equal(kept.test[u], split.test[u]) for u in kept.test)
    assert kept.test.keys() == bench.sampled(split, 25).test.keys()  # a fixed sample
    assert bench.sampled(split, len(split.test)) is split
