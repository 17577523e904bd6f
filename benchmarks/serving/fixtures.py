"""The serving benchmark's tenants (MovieLens, trained; synthetic 100K items) and requests."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from sqlalchemy import insert
from sqlmodel import col, select

from atlasrec.dataplane.tables import Item, ItemEmbedding
from atlasrec.datasets import build_movielens_tenant_mix
from atlasrec.datasets.synthetic import SyntheticTenantSpec, generate_synthetic_tenant
from atlasrec.ingest import ingest
from atlasrec.models.text import DIM, ENCODER, item_text
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import train_tenant
from atlasrec.tenancy import Region, SharingPolicy
from benchmarks.serving.config import ACTOR, COUNTRIES, REDIS_URL, REGION, SYNTHETIC_ITEMS


@dataclass
class TenantSetup:
    """A benchmark tenant: its key, and what realistic request bodies are drawn from."""

    tenant_id: str
    kind: str
    api_key: str
    users: list[str]
    items: list[str]
    categories: list[str]
    n_items: int
    n_users: int
    n_interactions: int
    model_version: str = ""
    setup_s: dict[str, float] = field(default_factory=dict)


def _csv_column(path: Path, column: str) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [row[column] for row in csv.DictReader(fh)]


def _describe(
    tenant_id: str, kind: str, api_key: str, items_csv: Path, interactions_csv: Path
) -> TenantSetup:
    users = _csv_column(interactions_csv, "user_id")
    categories = sorted({c for c in _csv_column(items_csv, "category") if c})
    items = _csv_column(items_csv, "item_id")
    return TenantSetup(
        tenant_id=tenant_id,
        kind=kind,
        api_key=api_key,
        users=sorted(set(users)),
        items=items,
        categories=categories,
        n_items=len(items),
        n_users=len(set(users)),
        n_interactions=len(users),
    )


def _create_and_ingest(platform: Any, tenant_id: str, items: Path, interactions: Path) -> str:
    """Create a solo tenant in REGION and ingest its files; return its API key."""
    region = Region(REGION)
    _, issued = platform.create_tenant(
        tenant_id, region=region, sharing=SharingPolicy.SOLO, actor=ACTOR
    )
    ingest(
        platform.plane(region),
        platform.scope(tenant_id),
        secret=platform.secret,
        actor=ACTOR,
        items=items,
        interactions=interactions,
    )
    key: str = issued.api_key
    return key


def setup_movielens(platform: Any, work: Path, epochs: int) -> TenantSetup:
    """The largest MovieLens tenant of the demo mix, trained without DP for `epochs` epochs."""
    started = time.perf_counter()
    mix = build_movielens_tenant_mix(work / "movielens")
    ds = max(mix, key=lambda d: d.n_interactions)
    key = _create_and_ingest(platform, ds.tenant_id, ds.items_csv, ds.interactions_csv)
    ingested = time.perf_counter()
    result = train_tenant(
        platform, ds.tenant_id, actor=ACTOR, no_dp=True, config=TwoTowerConfig(epochs=epochs)
    )
    setup = _describe(ds.tenant_id, "movielens", key, ds.items_csv, ds.interactions_csv)
    setup.model_version = result.model_version
    setup.setup_s = {
        "ingest": round(ingested - started, 1),
        "embed_and_train": round(time.perf_counter() - ingested, 1),
    }
    return setup


def _add_policies(items_csv: Path, seed: int) -> dict[str, int]:
    """Give a share of the items policy attributes (what the policy filter enforces)."""
    rng = random.Random(seed)
    with items_csv.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    extra = ("min_age", "countries", "excluded_countries", "in_stock", "boost", "bury")
    counts = dict.fromkeys(extra, 0)
    for row in rows:
        draw = rng.random()
        for name in extra:
            row[name] = ""
        if draw < 0.05:
            row["min_age"] = "18"
        elif draw < 0.08:
            row["countries"] = "DE FR"
        elif draw < 0.10:
            row["excluded_countries"] = "US"
        elif draw < 0.12:
            row["in_stock"] = "false"
        elif draw < 0.13:
            row["boost"] = "1.5"
        elif draw < 0.14:
            row["bury"] = "true"
        else:
            continue
        counts[next(n for n in extra if row[n])] += 1
    with items_csv.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return counts


def write_fake_embeddings(platform: Any, tenant_id: str, seed: int) -> int:
    """Cache deterministic pseudo-random unit vectors as the tenant's MiniLM embeddings.

    Each vector is its category's centroid plus noise, normalised; `content_sha` is that of
    `item_text(title, category, description)`, so the serving app treats them as cached.
    """
    plane = platform.plane(Region(REGION))
    scope = platform.scope(tenant_id)
    with plane.session(scope, actor=ACTOR, action="bench.read") as session:
        items = session.execute(
            select(Item.item_id, Item.title, Item.category, Item.description).order_by(
                col(Item.item_id)
            )
        ).all()
    rng = np.random.default_rng(seed)
    centroids: dict[str | None, np.ndarray] = {}
    for _, _, category, _ in items:
        if category not in centroids:
            crc = zlib.crc32(str(category).encode())
            centroids[category] = np.random.default_rng([seed, crc]).standard_normal(DIM)
    noise = rng.standard_normal((len(items), DIM))
    vectors = np.stack([centroids[c] for _, _, c, _ in items]) * 0.8 + noise
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    rows = [
        {
            "tenant_id": tenant_id,
            "item_id": item_id,
            "encoder": ENCODER,
            "content_sha": hashlib.sha256(
                item_text(title, category, description).encode()
            ).hexdigest(),
            "vector": vectors[n].tobytes(),
        }
        for n, (item_id, title, category, description) in enumerate(items)
    ]
    with plane.session(scope, actor=ACTOR, action="bench.embeddings") as session:
        for start in range(0, len(rows), 5_000):
            session.execute(insert(ItemEmbedding), rows[start : start + 5_000])
    return len(rows)


def setup_synthetic(platform: Any, work: Path, n_users: int, n_interactions: int) -> TenantSetup:
    """A synthetic retail tenant with a 100K-item catalog, policies, and fake embeddings."""
    started = time.perf_counter()
    spec = SyntheticTenantSpec(
        "shop-100k",
        Region(REGION),
        SharingPolicy.SOLO,
        n_items=SYNTHETIC_ITEMS,
        n_users=n_users,
        n_interactions=n_interactions,
        seed=7,
    )
    ds = generate_synthetic_tenant(spec, work / "synthetic")
    policies = _add_policies(ds.items_csv, seed=7)
    generated = time.perf_counter()
    key = _create_and_ingest(platform, ds.tenant_id, ds.items_csv, ds.interactions_csv)
    ingested = time.perf_counter()
    write_fake_embeddings(platform, ds.tenant_id, seed=7)
    setup = _describe(ds.tenant_id, "synthetic", key, ds.items_csv, ds.interactions_csv)
    setup.model_version = "content-embeddings"
    setup.setup_s = {
        "generate": round(generated - started, 1),
        "ingest": round(ingested - generated, 1),
        "fake_embeddings": round(time.perf_counter() - ingested, 1),
        **{f"items_with_{k}": v for k, v in policies.items()},
    }
    return setup


def request_bodies(setup: TenantSetup, n: int, seed: int) -> list[dict[str, Any]]:
    """Realistic request bodies: mostly known users, some unknown or anonymous sessions.

    70% known users, 20% unknown users with 2-8 recent items, 10% anonymous with recent
    items; independently 40% with country and age, 20% with a category filter (1-2
    categories), 10% excluding 1-5 items; k is 10 (20 for 10% of requests).
    """
    rng = random.Random(seed)
    bodies = []
    for n_body in range(n):
        body: dict[str, Any] = {"k": 20 if rng.random() < 0.1 else 10}
        context: dict[str, Any] = {}
        who = rng.random()
        if who < 0.7:
            body["user_id"] = rng.choice(setup.users)
        else:
            if who < 0.9:
                body["user_id"] = f"visitor-{seed}-{n_body}"
            context["recent_items"] = rng.sample(setup.items, rng.randint(2, 8))
        if rng.random() < 0.4:
            context["country"] = rng.choice(COUNTRIES)
            context["user_age"] = rng.randint(14, 70)
        filters: dict[str, Any] = {}
        if setup.categories and rng.random() < 0.2:
            filters["categories"] = rng.sample(setup.categories, min(len(setup.categories), 2))[
                : rng.randint(1, 2)
            ]
        if rng.random() < 0.1:
            filters["exclude_items"] = rng.sample(setup.items, rng.randint(1, 5))
        if context:
            body["context"] = context
        if filters:
            body["filters"] = filters
        bodies.append(body)
    return bodies


def raw_post(port: int, path: str, api_key: str, body: dict[str, Any]) -> bytes:
    """An HTTP/1.1 keep-alive POST request, ready to write."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def raw_get(port: int, path: str) -> bytes:
    """An HTTP/1.1 keep-alive GET request, ready to write."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def flush_redis() -> None:
    """Empty the benchmark's Redis db."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()
