"""The models benchmark's data: MovieLens interactions, content embeddings and categories."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np

from atlasrec.datasets import MOVIELENS_DIR
from atlasrec.datasets.synthetic import SyntheticTenantSpec
from atlasrec.evaluation import Interactions
from atlasrec.models.text import embed, item_text
from atlasrec.tenancy import Region, SharingPolicy

DELTA = 1e-5
K = 10
PER_USER = 30
"""Synthetic retail tenants' interactions per user, on average."""
ACTIVITY_EXPONENT = 0.5
"""Their users' activity exponent (`SyntheticTenantSpec`)."""
CONTENT_CACHE = Path(tempfile.gettempdir()) / "atlasrec-bench-ml-content.npy"
"""MovieLens content embeddings, kept between runs (and shared with the cost workers)."""


def movielens(items_csv: Path, ratings_csv: Path, cache: Path) -> tuple[Interactions, np.ndarray]:
    """Interactions and content embeddings of a MovieLens-format folder."""
    with items_csv.open(encoding="utf-8") as fh:
        movies = list(csv.DictReader(fh))
    key = "movieId" if "movieId" in movies[0] else "item_id"
    index = {m[key]: n for n, m in enumerate(movies)}
    content = content_embeddings(movies, cache)
    with ratings_csv.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    user_key = "userId" if "userId" in rows[0] else "user_id"
    item_key = "movieId" if "movieId" in rows[0] else "item_id"
    users: dict[str, int] = {}
    u = np.array([users.setdefault(r[user_key], len(users)) for r in rows])
    i = np.array([index[r[item_key]] for r in rows])
    ts = np.array([int(float(r["timestamp"])) for r in rows])
    return Interactions.from_arrays(u, i, ts, n_users=len(users), n_items=len(movies)), content


def content_embeddings(items: list[dict[str, str]], cache: Path) -> np.ndarray:
    """The items' content embeddings (title, genres or category, description), from `cache`."""
    if cache.exists():
        cached: np.ndarray = np.load(cache)
        return cached
    content = embed(
        [
            item_text(
                m.get("title", ""),
                (m.get("genres") or m.get("category") or "").replace("|", ", "),
                m.get("description"),
            )
            for m in items
        ]
    )
    np.save(cache, content)
    return content


def movielens_categories(items_csv: Path) -> list[str | None]:
    """Each item's category: the `category` column, else the first MovieLens genre."""
    with items_csv.open(encoding="utf-8") as fh:
        movies = list(csv.DictReader(fh))
    out: list[str | None] = []
    for m in movies:
        name = m.get("category") or (m.get("genres") or "").split("|")[0]
        out.append(None if not name or name == "(no genres listed)" else name)
    return out


def full_movielens() -> tuple[Interactions, np.ndarray]:
    """The full MovieLens set and its (cached) content embeddings."""
    return movielens(MOVIELENS_DIR / "movies.csv", MOVIELENS_DIR / "ratings.csv", CONTENT_CACHE)


def retail_spec(tenant_id: str, n_users: int, n_items: int, seed: int = 0) -> SyntheticTenantSpec:
    """A synthetic retail tenant of `n_users` users over `n_items` items, `PER_USER` each."""
    return SyntheticTenantSpec(
        tenant_id=tenant_id,
        region=Region.EU,
        sharing=SharingPolicy.SOLO,
        n_items=n_items,
        n_users=n_users,
        n_interactions=PER_USER * n_users,
        activity_exponent=ACTIVITY_EXPONENT,
        seed=seed,
    )
