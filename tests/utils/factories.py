"""Test data factories: CSV files in the ingest contract and tenants."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope, SharingPolicy

ITEMS_HEADER = ("item_id", "title", "category")
INTERACTIONS_HEADER = ("user_id", "item_id", "timestamp", "event", "weight")


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def items_rows(n: int, prefix: str = "i") -> list[tuple[str, str, str]]:
    return [(f"{prefix}{k}", f"Item {k}, deluxe", f"cat{k % 3}") for k in range(n)]


def interaction_rows(
    n: int, *, n_users: int = 5, n_items: int = 10, seed: int = 0, prefix: str = "i"
) -> list[tuple[str, str, int, str, float]]:
    rng = random.Random(seed)
    return [
        (
            f"user{rng.randrange(n_users)}",
            f"{prefix}{rng.randrange(n_items)}",
            1_700_000_000 + k,
            "view",
            1.0,
        )
        for k in range(n)
    ]


def tenant_files(
    folder: Path, *, n_items: int = 10, n_interactions: int = 30, seed: int = 0
) -> tuple[Path, Path]:
    items = write_csv(folder / "items.csv", ITEMS_HEADER, items_rows(n_items))
    inter = write_csv(
        folder / "interactions.csv",
        INTERACTIONS_HEADER,
        interaction_rows(n_interactions, n_items=n_items, seed=seed),
    )
    return items, inter


def make_tenant(
    platform: Platform,
    tenant_id: str,
    region: Region = Region.EU,
    sharing: SharingPolicy = SharingPolicy.REGIONAL,
) -> Scope:
    platform.create_tenant(tenant_id, region=region, sharing=sharing, actor="test")
    return Scope(tenant_id, region)


GENRES = ("jazz", "rock", "folk")
MUSIC_ITEMS = [(f"i{k}", f"Item {k} {GENRES[k % 3]} record", GENRES[k % 3]) for k in range(30)]


def music_interactions(n_users: int = 16) -> list[tuple[str, str, int, str, float]]:
    """Each user sticks to one genre: learnable structure for model tests."""
    return [
        (f"user-{u}", f"i{(u % 3) + 3 * ((u + n) % 10)}", 1_700_000_000 + 100 * u + n, "view", 1.0)
        for u in range(n_users)
        for n in range(6)
    ]


def seed_music_tenant(
    platform: Platform,
    tenant_id: str,
    region: Region,
    folder: Path,
    *,
    sharing: SharingPolicy = SharingPolicy.SOLO,
    n_users: int = 16,
    **options: object,
) -> Scope:
    """A tenant (solo unless told) with the music catalog and interactions ingested."""
    from atlasrec.ingest import ingest

    platform.create_tenant(
        tenant_id,
        region=region,
        sharing=sharing,
        actor="test",
        **options,  # type: ignore[arg-type]
    )
    scope = Scope(tenant_id, region)
    ingest(
        platform.plane(region),
        scope,
        secret=platform.secret,
        actor="test",
        items=write_csv(folder / f"{tenant_id}-items.csv", ITEMS_HEADER, MUSIC_ITEMS),
        interactions=write_csv(
            folder / f"{tenant_id}-interactions.csv",
            INTERACTIONS_HEADER,
            music_interactions(n_users),
        ),
    )
    return scope
