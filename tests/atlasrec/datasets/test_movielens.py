"""Tests for the MovieLens-derived tenant mix."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from atlasrec.datasets import (
    INTERACTIONS_HEADER,
    ITEMS_HEADER,
    MOVIELENS_DIR,
    MOVIELENS_TENANTS,
    TenantDataset,
    build_movielens_tenant_mix,
    format_tenant_table,
)
from atlasrec.datasets.movielens import MovieLensTenant, main
from atlasrec.errors import InvalidInputError
from atlasrec.tenancy import Region, SharingPolicy, validate_tenant_id

SHARED_COPY = Path("/work/shared/data/ml-latest-small")
Rows = list[dict[str, str]]
Files = dict[str, tuple[Rows, Rows]]


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory) -> list[TenantDataset]:
    return build_movielens_tenant_mix(tmp_path_factory.mktemp("ml"))


@pytest.fixture(scope="module")
def files(mix: list[TenantDataset]) -> Files:
    return {d.tenant_id: (read_rows(d.items_csv)[1], read_rows(d.interactions_csv)[1]) for d in mix}


def test_vendored_files_are_unchanged_and_licensed() -> None:
    for name in ("README.txt", "movies.csv", "ratings.csv", "tags.csv", "links.csv"):
        assert (MOVIELENS_DIR / name).is_file()
        if SHARED_COPY.is_dir():
            assert (MOVIELENS_DIR / name).read_bytes() == (SHARED_COPY / name).read_bytes()
    assert "Usage License" in (MOVIELENS_DIR / "README.txt").read_text(encoding="utf-8")
    notice = (MOVIELENS_DIR / "NOTICE.md").read_text(encoding="utf-8")
    assert "10.1145/2827872" in notice and "non-commercial" in notice


def test_mix_shape(mix: list[TenantDataset]) -> None:
    assert len(mix) >= 7
    assert [d.tenant_id for d in mix] == [t.tenant_id for t in MOVIELENS_TENANTS]
    for d in mix:
        validate_tenant_id(d.tenant_id)
        assert d.n_users >= 3 and d.n_items > 0 and d.n_interactions >= 3 * d.n_users
    assert len({d.region for d in mix}) >= 3
    assert {d.sharing for d in mix} == set(SharingPolicy)
    sparse = [d for d in mix if d.n_users <= 50]
    assert len(sparse) >= 2
    caps = {t.tenant_id: t.max_users for t in MOVIELENS_TENANTS}
    for d in mix:
        cap = caps[d.tenant_id]
        assert cap is None or d.n_users <= cap


def test_headers_match_contract(mix: list[TenantDataset]) -> None:
    for d in mix:
        assert read_rows(d.items_csv)[0] == list(ITEMS_HEADER)
        assert read_rows(d.interactions_csv)[0] == list(INTERACTIONS_HEADER)


def test_counts_match_files(mix: list[TenantDataset], files: Files) -> None:
    for d in mix:
        items, interactions = files[d.tenant_id]
        assert d.n_items == len(items)
        assert d.n_interactions == len(interactions)
        assert d.n_users == len({r["user_id"] for r in interactions})


def test_catalogs_and_users_are_disjoint(files: Files) -> None:
    item_owner: dict[str, str] = {}
    user_owner: dict[str, str] = {}
    for tenant_id, (items, interactions) in files.items():
        ids = [r["item_id"] for r in items]
        assert len(ids) == len(set(ids))
        for item_id in ids:
            assert item_owner.setdefault(item_id, tenant_id) == tenant_id
        for r in interactions:
            assert user_owner.setdefault(r["user_id"], tenant_id) == tenant_id


def test_interactions_reference_own_catalog_and_are_sorted(files: Files) -> None:
    for items, interactions in files.values():
        catalog = {r["item_id"] for r in items}
        assert all(r["item_id"] in catalog for r in interactions)
        keys = [(int(r["timestamp"]), int(r["user_id"][1:])) for r in interactions]
        assert keys == sorted(keys)
        assert {r["event"] for r in interactions} == {"rating"}
        assert all(0.5 <= float(r["weight"]) <= 5.0 for r in interactions)
        per_user = Counter(r["user_id"] for r in interactions)
        assert min(per_user.values()) >= 3


def test_interactions_are_the_users_real_ratings(files: Files) -> None:
    with (MOVIELENS_DIR / "ratings.csv").open(encoding="utf-8", newline="") as f:
        ratings = {
            (f"u{r['userId']}", f"m{r['movieId']}"): (r["timestamp"], r["rating"])
            for r in csv.DictReader(f)
        }
    for items, interactions in files.values():
        for r in interactions:
            assert ratings[(r["user_id"], r["item_id"])] == (r["timestamp"], r["weight"])
        # Every rating a kept user gave to a movie of this catalog is present.
        users = {r["user_id"] for r in interactions}
        catalog = {r["item_id"] for r in items}
        expected = sum(1 for u, m in ratings if u in users and m in catalog)
        assert expected == len(interactions)


def test_item_fields(files: Files) -> None:
    genre_of = {t.tenant_id: t.genres for t in MOVIELENS_TENANTS}
    with (MOVIELENS_DIR / "movies.csv").open(encoding="utf-8", newline="") as f:
        movies = {f"m{r['movieId']}": r for r in csv.DictReader(f)}
    for tenant_id, (items, _) in files.items():
        for item in items:
            source = movies[item["item_id"]]
            genres = source["genres"].split("|")
            assert item["category"] == next(g for g in genres if g in genre_of[tenant_id])
            assert item["description"].startswith(f"Genres: {', '.join(genres)}.")
            raw = source["title"].strip()
            if item["year"]:
                assert raw.endswith(f"({item['year']})")
                raw = raw.removesuffix(f"({item['year']})").strip()
            assert raw == item["title"]


def test_titles_with_commas_and_quotes_round_trip(files: Files) -> None:
    titles = {item["item_id"]: item["title"] for items, _ in files.values() for item in items}
    assert titles["m1"] == "Toy Story"
    assert titles["m11"] == "American President, The"
    assert any('"' in t for t in titles.values())
    assert sum("," in t for t in titles.values()) > 100


def test_tags_are_top_lowercased_and_deduplicated(files: Files) -> None:
    descriptions = {i["item_id"]: i["description"] for items, _ in files.values() for i in items}
    assert descriptions["m1"] == (
        "Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun."
    )
    for text in descriptions.values():
        if " Tags: " in text:
            tags = text.split(" Tags: ")[1].rstrip(".").split(", ")
            assert 1 <= len(tags) <= 5 and len(set(tags)) == len(tags)
            assert all(t == t.lower() for t in tags)


def test_deterministic(tmp_path: Path, mix: list[TenantDataset]) -> None:
    again = build_movielens_tenant_mix(tmp_path)
    for a, b in zip(mix, again, strict=True):
        assert a.items_csv.read_bytes() == b.items_csv.read_bytes()
        assert a.interactions_csv.read_bytes() == b.interactions_csv.read_bytes()
        assert (a.n_items, a.n_users, a.n_interactions) == (b.n_items, b.n_users, b.n_interactions)


def test_too_narrow_tenant_is_rejected(tmp_path: Path) -> None:
    tenants = (
        MovieLensTenant("ml-noir", "noir", Region.US, SharingPolicy.SOLO, ("Film-Noir",), 2),
        MovieLensTenant("ml-rest", "rest", Region.EU, SharingPolicy.GLOBAL, ("Drama", "Comedy")),
    )
    with pytest.raises(InvalidInputError, match="ml-noir"):
        build_movielens_tenant_mix(tmp_path, tenants=tenants)


def test_table_and_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "tenant",
        "region",
        "sharing",
        "items",
        "users",
        "interactions",
    ]
    assert "ml-western" in out
    assert format_tenant_table([]).split() == out.splitlines()[0].split()
