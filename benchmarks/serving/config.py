"""The serving benchmark's constants: region, Redis db, ports, load shape, targets."""

from __future__ import annotations

REGION = "eu"
REDIS_URL = "redis://127.0.0.1:6379/11"
"""A dedicated Redis db: flushed at start and at the end."""
PORT_BASE = 18080
ACTOR = "bench:serving"
SYNTHETIC_ITEMS = 100_000
ML_EPOCHS = 3
RATES = (150.0, 300.0)
CONCURRENCY = 16
BODIES = 2_000
TARGET_P99_MS = 25.0
TARGET_RATE = 300.0
COUNTRIES = ("DE", "FR", "GB", "US", "IN", "BR", "SG")
STAGE_ROOTS: dict[str, tuple[tuple[str, str], ...]] = {
    "features": (("serving/online.py", "recent"),),
    "retrieval": (
        ("serving/state.py", "user_vector"),
        ("serving/pipeline.py", "_popular_positions"),
        ("serving/pipeline.py", "_candidates"),
    ),
    "ranking": (
        ("serving/pipeline.py", "_rank"),
        ("serving/pipeline.py", "_popularity_scores"),
    ),
    "reranking": (
        ("serving/pipeline.py", "_relevance"),
        ("serving/pipeline.py", "_rerank"),
    ),
    "policy": (
        ("serving/pipeline.py", "_policy_filter"),
        ("serving/pipeline.py", "_backfill"),
    ),
}
"""The functions each stage of `serving.pipeline.recommend` spends its time in."""
