"""The events benchmark's constants: region, tenant, ports, Redis dbs, sizes, targets."""

from __future__ import annotations

REGION = "eu"
TENANT = "shop"
BASELINE_COMMIT = "94d27a7"
PORT_BASE = 18380
REDIS_BASE = "redis://127.0.0.1:6379"
REDIS_DBS = (8, 9, 10)
REDIS_INNER_DBS = (6, 7)
"""One Redis db per variant, flushed before and after the run."""
CATALOG_ITEMS = 300
CATALOG_USERS = 200
CATALOG_INTERACTIONS = 2_000
LOAD_USERS = 10_000
BODIES = 400
TARGET_EVENTS_PER_S = 5_000.0
TARGET_P99_MS = 20.0
TARGET_CONSUMER_EVENTS_PER_S = 50_000.0
TARGET_INGEST_ROWS_PER_S = 200_000.0
TARGET_FRESHNESS_S = 1.0
PRODUCT_EVENTS_PER_DAY = 9_000_000_000
PEAK_FACTOR = 3.0
REGION_SHARES = {"us": 0.40, "eu": 0.30, "in": 0.20, "sg": 0.10}
"""The assumed split of the product's traffic over the four regions."""
