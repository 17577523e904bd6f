"""Tests for the seeded synthetic retail tenant generator."""

from __future__ import annotations

import csv
import dataclasses
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from atlasrec.datasets import (
    EVENT_WEIGHTS,
    EVENTS,
    INTERACTIONS_HEADER,
    ITEMS_HEADER,
    RETAIL_CATEGORIES,
    SIZE_PRESETS,
    SyntheticTenantSpec,
    TenantDataset,
    generate_synthetic_tenant,
    synthetic_fleet,
)
from atlasrec.datasets.synthetic import synthetic_truth
from atlasrec.errors import InvalidInputError
from atlasrec.tenancy import Region, SharingPolicy

SPEC = SyntheticTenantSpec(
    tenant_id="shop-test",
    region=Region.EU,
    sharing=SharingPolicy.REGIONAL,
    n_items=2_000,
    n_users=300,
    n_interactions=20_000,
    seed=7,
)


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def file_bytes(d: TenantDataset) -> bytes:
    return d.items_csv.read_bytes() + b"\0" + d.interactions_csv.read_bytes()


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> TenantDataset:
    return generate_synthetic_tenant(SPEC, tmp_path_factory.mktemp("syn"))


@pytest.fixture(scope="module")
def items(tenant: TenantDataset) -> list[dict[str, str]]:
    return read_rows(tenant.items_csv)[1]


@pytest.fixture(scope="module")
def interactions(tenant: TenantDataset) -> list[dict[str, str]]:
    return read_rows(tenant.interactions_csv)[1]


def test_sizes_match_spec(
    tenant: TenantDataset, items: list[dict[str, str]], interactions: list[dict[str, str]]
) -> None:
    assert (tenant.n_items, tenant.n_users, tenant.n_interactions) == (2_000, 300, 20_000)
    assert len(items) == SPEC.n_items
    assert len(interactions) == SPEC.n_interactions
    assert len({r["user_id"] for r in interactions}) == SPEC.n_users
    assert tenant.items_csv == tenant.items_csv.parent / "items.csv"
    assert tenant.items_csv.parent.name == "shop-test"
    assert (tenant.region, tenant.sharing) == (Region.EU, SharingPolicy.REGIONAL)


def test_headers_and_fields(
    tenant: TenantDataset, items: list[dict[str, str]], interactions: list[dict[str, str]]
) -> None:
    assert read_rows(tenant.items_csv)[0] == list(ITEMS_HEADER)
    assert read_rows(tenant.interactions_csv)[0] == list(INTERACTIONS_HEADER)
    ids = [r["item_id"] for r in items]
    assert ids == [f"p{i:06d}" for i in range(SPEC.n_items)]
    assert {r["category"] for r in items} <= set(RETAIL_CATEGORIES)
    assert len({r["category"] for r in items}) == 20
    assert all(len(r["title"].split()) >= 3 and r["description"] for r in items)
    assert all(2015 <= int(r["year"]) <= 2024 for r in items)
    weight_of = dict(zip(EVENTS, EVENT_WEIGHTS, strict=True))
    assert {r["event"] for r in interactions} == set(EVENTS)
    assert all(int(r["weight"]) == weight_of[r["event"]] for r in interactions)
    catalog = set(ids)
    assert all(r["item_id"] in catalog for r in interactions)
    assert all(r["user_id"].startswith("c") and len(r["user_id"]) == 7 for r in interactions)


def test_timestamps_sorted_within_span(interactions: list[dict[str, str]]) -> None:
    keys = [(int(r["timestamp"]), r["user_id"], r["item_id"]) for r in interactions]
    assert keys == sorted(keys)
    end = SPEC.start_ts + SPEC.span_days * 86_400
    assert SPEC.start_ts <= keys[0][0] and keys[-1][0] < end
    # Arrivals cover the whole span, not just its start.
    assert keys[-1][0] - keys[0][0] > 0.95 * (end - SPEC.start_ts)


def test_item_popularity_is_power_law(interactions: list[dict[str, str]]) -> None:
    counts = sorted(Counter(r["item_id"] for r in interactions).values(), reverse=True)
    top = counts[: SPEC.n_items // 100]
    assert sum(top) / SPEC.n_interactions > 0.10


def test_user_activity_is_skewed(interactions: list[dict[str, str]]) -> None:
    counts = sorted(Counter(r["user_id"] for r in interactions).values(), reverse=True)
    top_decile = sum(counts[: SPEC.n_users // 10]) / SPEC.n_interactions
    assert top_decile > 0.3
    assert counts[-1] >= 1


def test_users_have_category_taste(
    items: list[dict[str, str]], interactions: list[dict[str, str]]
) -> None:
    category = {r["item_id"]: r["category"] for r in items}
    per_user: dict[str, Counter[str]] = {}
    for r in interactions:
        per_user.setdefault(r["user_id"], Counter())[category[r["item_id"]]] += 1
    heavy = [c for c in per_user.values() if c.total() >= 50]
    assert heavy
    share = [c.most_common(1)[0][1] / c.total() for c in heavy]
    assert sum(share) / len(share) > 0.4  # far above the 1/20 of a taste-free user


def test_hidden_segments_shape_interactions_and_no_item_text(
    tmp_path: Path, tenant: TenantDataset
) -> None:
    hidden = dataclasses.replace(SPEC, hidden_share=0.5)
    made = generate_synthetic_tenant(hidden, tmp_path)
    assert made.items_csv.read_bytes() == tenant.items_csv.read_bytes()  # no text names them
    truth = synthetic_truth(hidden)
    assert truth.item_category.tolist() == synthetic_truth(SPEC).item_category.tolist()

    def shares(d: TenantDataset) -> tuple[float, float]:
        rows = read_rows(d.interactions_csv)[1]
        user = np.array([int(r["user_id"][1:]) for r in rows])
        item = np.array([int(r["item_id"][1:]) for r in rows])
        segment = truth.item_segment[item] == truth.user_segment[user]
        category = truth.item_category[item] == truth.user_favorite[user]
        return float(segment.mean()), float(category.mean())

    segment, category = shares(made)
    plain_segment, plain_category = shares(tenant)
    assert plain_segment < 0.1  # chance: about 1 in 20 segments
    assert 0.25 < segment < 0.4  # half of the 60% taste share, plus chance
    assert category < plain_category - 0.2


def test_reproducible_by_seed(tmp_path: Path, tenant: TenantDataset) -> None:
    again = generate_synthetic_tenant(SPEC, tmp_path / "a")
    assert file_bytes(again) == file_bytes(tenant)
    other = generate_synthetic_tenant(dataclasses.replace(SPEC, seed=8), tmp_path / "b")
    assert file_bytes(other) != file_bytes(tenant)
    renamed = generate_synthetic_tenant(dataclasses.replace(SPEC, tenant_id="shop-2"), tmp_path)
    assert renamed.interactions_csv.read_bytes() != tenant.interactions_csv.read_bytes()


@pytest.mark.parametrize(
    ("chunk_size", "hidden_share"), [(1, 0.0), (97, 0.0), (4_096, 0.0), (97, 0.5)]
)
def test_chunk_size_does_not_change_output(
    tmp_path: Path, tenant: TenantDataset, chunk_size: int, hidden_share: float
) -> None:
    spec = dataclasses.replace(SPEC, hidden_share=hidden_share)
    spec = dataclasses.replace(spec, n_interactions=3_000) if chunk_size == 1 else spec
    small = generate_synthetic_tenant(spec, tmp_path / "small", chunk_size=chunk_size)
    big = generate_synthetic_tenant(spec, tmp_path / "big", chunk_size=10**7)
    assert file_bytes(small) == file_bytes(big)


def test_ties_across_chunk_boundaries_stay_sorted(tmp_path: Path) -> None:
    # 5,000 events in one day: many share a second, and chunks of 13 split those groups.
    spec = dataclasses.replace(SPEC, n_interactions=5_000, span_days=1, n_users=40)
    chunked = generate_synthetic_tenant(spec, tmp_path / "c", chunk_size=13)
    whole = generate_synthetic_tenant(spec, tmp_path / "w")
    assert file_bytes(chunked) == file_bytes(whole)
    rows = read_rows(chunked.interactions_csv)[1]
    keys = [(int(r["timestamp"]), r["user_id"], r["item_id"]) for r in rows]
    assert keys == sorted(keys)
    assert len({k[0] for k in keys}) < len(keys)


def test_memory_is_bounded_by_chunk_size(tmp_path: Path) -> None:
    spec = dataclasses.replace(SPEC, n_interactions=50_000)

    def peak(chunk_size: int) -> int:
        tracemalloc.start()
        try:
            generate_synthetic_tenant(spec, tmp_path / str(chunk_size), chunk_size=chunk_size)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    chunked, whole = peak(1_000), peak(50_000)
    assert chunked * 4 < whole
    assert chunked < 3 * 1024 * 1024


@pytest.mark.parametrize(
    "change",
    [
        {"n_items": 0},
        {"n_interactions": 10},
        {"n_categories": 21},
        {"span_days": 0},
        {"popularity_exponent": -1.0},
        {"tenant_id": "Bad Id"},
        {"hidden_share": 1.5},
        {"n_segments": 0},
    ],
)
def test_invalid_spec_is_rejected(tmp_path: Path, change: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        generate_synthetic_tenant(dataclasses.replace(SPEC, **change), tmp_path)  # type: ignore[arg-type]


def test_few_categories_and_tiny_tenant(tmp_path: Path) -> None:
    spec = SyntheticTenantSpec("tiny", Region.SG, SharingPolicy.SOLO, 3, 2, 5, n_categories=2)
    d = generate_synthetic_tenant(spec, tmp_path)
    rows = read_rows(d.interactions_csv)[1]
    assert len(rows) == 5 and {r["user_id"] for r in rows} == {"c000000", "c000001"}
    assert {r["category"] for r in read_rows(d.items_csv)[1]} <= set(RETAIL_CATEGORIES[:2])


def test_size_presets() -> None:
    assert SIZE_PRESETS["small"] == (500, 50, 1_000)
    assert SIZE_PRESETS["medium"] == (20_000, 5_000, 100_000)
    assert SIZE_PRESETS["large"] == (100_000, 50_000, 1_000_000)


def test_fleet(tmp_path: Path) -> None:
    fleet = synthetic_fleet(12, tmp_path / "a", seed=3, max_size="small")
    assert len(fleet) == 12 and len({d.tenant_id for d in fleet}) == 12
    assert {d.region for d in fleet} == set(Region)
    assert {d.sharing for d in fleet} == set(SharingPolicy)
    for d in fleet:
        assert 375 <= d.n_items <= 625 and d.n_interactions >= d.n_users
        assert len(read_rows(d.interactions_csv)[1]) == d.n_interactions
    again = synthetic_fleet(12, tmp_path / "b", seed=3, max_size="small")
    assert [file_bytes(d) for d in again] == [file_bytes(d) for d in fleet]


def test_fleet_is_mostly_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[SyntheticTenantSpec] = []

    def fake(spec: SyntheticTenantSpec, out_dir: Path) -> TenantDataset:
        made.append(spec)
        return TenantDataset(
            spec.tenant_id,
            "fake",
            spec.region,
            spec.sharing,
            out_dir / "i",
            out_dir / "x",
            spec.n_items,
            spec.n_users,
            spec.n_interactions,
        )

    monkeypatch.setattr("atlasrec.datasets.synthetic.generate_synthetic_tenant", fake)
    synthetic_fleet(400, tmp_path, seed=1, max_size="large")
    small = sum(s.n_items < 1_000 for s in made)
    large = sum(s.n_items >= 75_000 for s in made)
    assert small > 0.7 * len(made) and 0 < large < small
    assert len({s.seed for s in made}) == len(made)
    with pytest.raises(InvalidInputError):
        synthetic_fleet(1, tmp_path, max_size="huge")
