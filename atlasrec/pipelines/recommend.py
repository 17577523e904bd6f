"""`atlasrec recommend`: top-k items for a tenant's users, through the serving pipeline.

The same path as POST /v1/recommendations (`serving.pipeline.recommend`) on the tenant's
serving snapshot, without deadlines. Items the user ever interacted with are excluded
(read from the offline store, ingested files and events, so the whole history counts, not
only the online store's recent items), and the profile's pooling counts them all. Users
without history (unknown ids included) get the cold-start list.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow.dataset as ds

from atlasrec.errors import InvalidInputError
from atlasrec.intents import Intent
from atlasrec.online_store import OnlineStore, make_backend
from atlasrec.platform import Platform

MAX_K = 1000
_CHUNK = 500
NO_DEADLINES = {"features": 1e9, "retrieval": 1e9, "ranking": 1e9, "reranking": 1e9}


@dataclass(frozen=True)
class Recommendation:
    """One user's list (`user_id` is the tenant's own id)."""

    user_id: str
    items: list[str]
    cold_start: bool
    model_version: str


def recommend_users(
    platform: Platform,
    tenant_id: str,
    user_ids: Sequence[str],
    k: int,
    *,
    actor: str,
    intent: Intent | None = None,
) -> Iterator[Recommendation]:
    """Recommendations for each of `user_ids`, in order, for `intent` (`atlasrec.intents`).

    Without an intent, the model version's default order (`default_order`).
    """
    from serving.pipeline import Query, recommend
    from serving.runtime import RegionRuntime

    if not 1 <= k <= MAX_K:
        raise InvalidInputError(f"--k must be between 1 and {MAX_K}, got {k}")
    tenant = platform.control.get_tenant(tenant_id)
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    online = OnlineStore(scope.region, make_backend(platform.settings.redis_url), plane.boundary)
    runtime = RegionRuntime(platform, scope.region, online=online).tenant(tenant)
    offline = plane.offline.scoped(scope, actor=actor)
    for start in range(0, len(user_ids), _CHUNK):
        chunk = list(user_ids[start : start + _CHUNK])
        keys = [runtime.pseudonymise(u) for u in chunk]
        seen: dict[str, set[str]] = {key: set() for key in keys}
        history = offline.read_table(
            ["user_key", "item_id"], where=ds.field("user_key").isin(sorted(set(keys)))
        )
        for key, item_id in zip(
            history["user_key"].to_pylist(), history["item_id"].to_pylist(), strict=True
        ):
            seen[key].add(item_id)
        state = runtime.state
        for user_id, key in zip(chunk, keys, strict=True):
            query = Query(
                user_key=key,
                k=k,
                exclude_items=frozenset(i for i in seen[key] if i in state.position),
                intent=intent,
                older_items=frozenset(seen[key]),
            )
            served = recommend(state, runtime.online, query, NO_DEADLINES)
            yield Recommendation(
                user_id, [item for item, _ in served.items], served.cold_start, served.model_version
            )
