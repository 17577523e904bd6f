"""The benchmark's tenants: a small synthetic catalog, one home per variant, request bodies."""

from __future__ import annotations

import csv
import hashlib
import random
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

from atlasrec.datasets.synthetic import SyntheticTenantSpec, generate_synthetic_tenant
from atlasrec.models.text import DIM, ENCODER, item_text
from atlasrec.tenancy import Region, SharingPolicy
from benchmarks.events.config import (
    CATALOG_INTERACTIONS,
    CATALOG_ITEMS,
    CATALOG_USERS,
    LOAD_USERS,
    REGION,
    TENANT,
)
from benchmarks.events.processes import Home, cli_json, run_child
from benchmarks.serving.fixtures import raw_post


def catalog(work: Path) -> tuple[Path, Path]:
    """The serving tenant's files: a small synthetic catalog (fast to embed at start)."""
    spec = SyntheticTenantSpec(
        TENANT,
        Region(REGION),
        SharingPolicy.SOLO,
        CATALOG_ITEMS,
        CATALOG_USERS,
        CATALOG_INTERACTIONS,
        seed=7,
    )
    ds = generate_synthetic_tenant(spec, work)
    return ds.items_csv, ds.interactions_csv


def item_ids(items_csv: Path) -> list[str]:
    """The catalog's item ids."""
    with items_csv.open(encoding="utf-8", newline="") as fh:
        return [row["item_id"] for row in csv.DictReader(fh)]


def create_tenant(home: Home, tenant: str = TENANT) -> str:
    """Register a solo tenant in the home's region through the variant's CLI; its API key."""
    made = cli_json(
        home, "tenants", "create", "--id", tenant, "--region", REGION, "--sharing", "solo"
    )
    return str(made["api_key"])


def ingest(home: Home, tenant: str, items: Path | None, interactions: Path | None) -> Any:
    """`atlasrec ingest` through the variant's CLI; the finished run (time, peak RSS)."""
    argv = home.cli("ingest", "--tenant", tenant)
    if items is not None:
        argv += ["--items", str(items)]
    if interactions is not None:
        argv += ["--interactions", str(interactions)]
    done = run_child(argv, home.env(), home.variant.code)
    if done.returncode:
        raise RuntimeError(f"ingest failed ({done.returncode}): {done.output[-2000:]}")
    return done


def fake_embeddings(home: Home, items_csv: Path, seed: int = 0) -> int:
    """Cache pseudo-random unit vectors as the items' MiniLM embeddings (raw SQLite).

    `content_sha` is that of `item_text(...)`, so the server takes them as cached and never
    loads the encoder: a server starts in seconds. Written with sqlite3, not through either
    variant's code, so the baseline's database is not migrated by the new code.
    """
    with items_csv.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    vectors = np.random.default_rng(seed).standard_normal((len(rows), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    db = sqlite3.connect(home.path / "regions" / REGION / "data.db", timeout=30)
    try:
        with db:
            db.executemany(
                "INSERT INTO item_embeddings (tenant_id, item_id, encoder, content_sha, vector) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        TENANT,
                        r["item_id"],
                        ENCODER,
                        hashlib.sha256(
                            item_text(r["title"], r["category"], r["description"]).encode()
                        ).hexdigest(),
                        vectors[n].tobytes(),
                    )
                    for n, r in enumerate(rows)
                ],
            )
    finally:
        db.close()
    return len(rows)


def prepare(home: Home, items: Path, interactions: Path) -> Home:
    """The serving tenant in a variant's home: created, catalog and history ingested, embedded."""
    home.path.mkdir(parents=True, exist_ok=True)
    home.api_key = create_tenant(home)
    ingest(home, TENANT, items, interactions)
    fake_embeddings(home, items)
    return home


def flush(redis_url: str) -> None:
    """Empty a Redis db of the benchmark's."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


def event(
    rng: random.Random, items: list[str], *, ids: bool, user: str | None = None
) -> dict[str, Any]:
    """One event body; with a client event id where `ids` (the new API; the old refuses it)."""
    body: dict[str, Any] = {
        "user_id": user or f"load{rng.randrange(LOAD_USERS)}",
        "item_id": rng.choice(items),
    }
    if ids:
        body["event_id"] = uuid.uuid4().hex
    return body


def event_requests(
    port: int, api_key: str, items: list[str], batch: int, n: int, seed: int
) -> list[bytes]:
    """`n` raw POST /v1/events requests of `batch` events each (no event ids: both APIs)."""
    rng = random.Random(seed)
    return [
        raw_post(
            port,
            "/v1/events",
            api_key,
            {"events": [event(rng, items, ids=False) for _ in range(batch)]},
        )
        for _ in range(n)
    ]
