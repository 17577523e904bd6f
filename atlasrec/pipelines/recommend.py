"""`atlasrec recommend`: top-k items for a tenant's users, in the tenant's own user ids.

Retrieval is a faiss inner-product index over the model's item vectors; items the user
already interacted with are excluded. Users without history (unknown ids included) take
the cold-start path: popularity, or under DP (where exact counts are not kept) the user
tower's output for an empty history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
from sqlmodel import col, select

from atlasrec.dataplane.models import Interaction
from atlasrec.dataplane.repository import TenantData
from atlasrec.errors import InvalidInputError
from atlasrec.models.bundle import KIND, ModelBundle
from atlasrec.platform import Platform

MAX_K = 1000
_CHUNK = 500


@dataclass(frozen=True)
class Recommendation:
    """One user's list (`user_id` is the tenant's own id)."""

    user_id: str
    items: list[str]
    cold_start: bool


def load_latest(platform: Platform, tenant_id: str, *, actor: str) -> ModelBundle:
    """The tenant's newest published model."""
    scope = platform.scope(tenant_id)
    artifact = platform.plane(scope.region).artifacts.latest(scope, KIND, actor=actor)
    if artifact is None:
        raise InvalidInputError(
            f"tenant {tenant_id!r} has no trained model yet "
            f"(run `atlasrec train --tenant {tenant_id}`)"
        )
    return ModelBundle.load(artifact)


def recommend_users(
    platform: Platform, tenant_id: str, user_ids: Sequence[str], k: int, *, actor: str
) -> Iterator[Recommendation]:
    """Recommendations for each of `user_ids`, in order."""
    if not 1 <= k <= MAX_K:
        raise InvalidInputError(f"--k must be between 1 and {MAX_K}, got {k}")
    bundle = load_latest(platform, tenant_id, actor=actor)
    scope = platform.scope(tenant_id)
    plane = platform.plane(scope.region)
    index = faiss.IndexFlatIP(bundle.item_vectors.shape[1])
    index.add(bundle.item_vectors)
    position = {item_id: n for n, item_id in enumerate(bundle.item_ids)}
    cold = _cold_start_ranking(bundle)
    for start in range(0, len(user_ids), _CHUNK):
        chunk = list(user_ids[start : start + _CHUNK])
        with plane.session(scope, actor=actor, action="recommend") as session:
            pseudonym = TenantData(session).pseudonymiser(platform.secret)
            keys = [pseudonym(u) for u in chunk]
            rows = session.execute(
                select(Interaction.user_key, Interaction.item_id)
                .where(col(Interaction.user_key).in_(set(keys)))
                .order_by(col(Interaction.ts))
            ).all()
        seen: dict[str, list[int]] = {key: [] for key in keys}
        for key, item_id in rows:
            if item_id in position:
                seen[key].append(position[item_id])
        yield from _rank(chunk, keys, seen, bundle, index, cold, k)


def _cold_start_ranking(bundle: ModelBundle) -> np.ndarray:
    if bundle.popularity.sum() > 0:
        return np.argsort(-bundle.popularity, kind="stable")
    vector = bundle.model.encode_histories([[]])[0]
    return np.argsort(-(bundle.item_vectors @ vector), kind="stable")


def _rank(
    user_ids: list[str],
    keys: list[str],
    seen: dict[str, list[int]],
    bundle: ModelBundle,
    index: faiss.IndexFlatIP,
    cold: np.ndarray,
    k: int,
) -> Iterator[Recommendation]:
    warm = [n for n, key in enumerate(keys) if seen[key]]
    results: dict[int, list[int]] = {}
    if warm:
        # each item once, at its latest position, oldest first
        histories = [list(dict.fromkeys(reversed(seen[keys[n]])))[::-1] for n in warm]
        vectors = bundle.model.encode_histories(histories)
        depth = min(bundle.model.n_items, k + max(len(set(seen[keys[n]])) for n in warm))
        _, found = index.search(np.ascontiguousarray(vectors, dtype=np.float32), depth)
        for row, n in enumerate(warm):
            exclude = set(seen[keys[n]])
            results[n] = [int(i) for i in found[row] if i >= 0 and i not in exclude][:k]
    for n, user_id in enumerate(user_ids):
        if n in results:
            yield Recommendation(user_id, [bundle.item_ids[i] for i in results[n]], False)
        else:
            yield Recommendation(user_id, [bundle.item_ids[i] for i in cold[:k]], True)
