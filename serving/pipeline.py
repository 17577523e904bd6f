"""The serving path of one request: features -> retrieval -> ranking -> re-ranking -> policy.

Each stage has a deadline (the running sum of the per-stage budgets). A stage that would
start past its deadline is replaced by its cheap fallback (retrieval: popular and fresh
items; ranking: the retrieval order; re-ranking: none), and the response lists it under
`degraded`. The policy filter has no fallback: it runs on every response.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from atlasrec.catalog import ItemPolicy
from atlasrec.features import CooccurrenceProfile, ItemStats, ranking_features
from atlasrec.intents import PROFILE_CANDIDATES, Intent, profile_scores
from atlasrec.models.ranking import N_CANDIDATES, NEIGHBOUR_CANDIDATES
from serving.online import OnlineFeatures
from serving.state import ServingState

RETRIEVAL_DEPTH = 200
POPULAR_CANDIDATES = 50
MMR_LAMBDA = 0.8
MMR_POOL = 3
BURY_OFFSET = 2.0
"""Relevance is in [0, 1] and MMR's similarity term moves a gain by at most 2 * (1 - lambda)."""
STAGES = ("features", "retrieval", "ranking", "reranking", "policy")


@dataclass(frozen=True)
class Query:
    """A validated recommendation request, in the tenant's own ids."""

    user_key: str | None
    k: int
    recent_items: Sequence[str] = ()
    user_age: int | None = None
    country: str | None = None
    categories: frozenset[str] | None = None
    exclude_items: frozenset[str] = frozenset()
    intent: Intent = "next"


@dataclass
class Served:
    """A response before serialisation."""

    items: list[tuple[str, float]]
    model_version: str
    cold_start: bool
    degraded: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    intent: Intent = "next"
    """The order served: `profile` only where asked and the history has neighbours."""


class _Clock:
    def __init__(self, budgets: Mapping[str, float]) -> None:
        self.start = time.perf_counter()
        self.mark = self.start
        self.deadlines: dict[str, float] = {}
        total = 0.0
        for stage in STAGES[:-1]:
            self.deadlines[stage] = total  # latest start time of the stage, ms
            total += float(budgets.get(stage, 0.0))
        self.timings: dict[str, float] = {}

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000

    def may_start(self, stage: str) -> bool:
        return self.elapsed_ms() <= self.deadlines[stage]

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round((now - self.mark) * 1000, 3)
        self.mark = now


def recommend(
    state: ServingState,
    online: OnlineFeatures,
    query: Query,
    budgets: Mapping[str, float],
    now: float | None = None,
) -> Served:
    """Run the serving path for one request on one snapshot."""
    clock = _Clock(budgets)
    degraded: list[str] = []
    intent: Intent = "next"
    now = time.time() if now is None else now

    # features: the user's recent items (online store, else this process's copy)
    stored: list[str] = []
    if query.user_key is not None:
        stored, answered = online.recent(query.user_key)
        if not answered:
            degraded.append("features")
    history = history_positions(state, stored, query.recent_items)
    seen = set(history) | {state.position[i] for i in query.exclude_items}
    clock.lap("features")

    # retrieval
    user = None
    if clock.may_start("retrieval"):
        user = state.user_vector(history) if history else None
    else:
        degraded.append("retrieval")
    cold = not history
    popular = _popular_positions(state, online)
    candidates = _candidates(state, user, seen, popular)
    scores = (
        state.unit[candidates] @ user
        if user is not None
        else np.zeros(len(candidates), dtype=np.float32)
    )
    clock.lap("retrieval")

    # ranking
    if user is None:
        ranked = _popularity_scores(state, online, candidates)
    elif clock.may_start("ranking"):
        # one pooling of the history's neighbours feeds the item-item source and the feature
        profile = state.cooccurrence_profile(history)
        candidates, scores, head = _ranking_head(state, candidates, scores, user, seen, profile)
        whole = state.history_profile(history) if query.intent == "profile" else None
        if whole is not None:  # the profile's best join the ranked head, as offline
            exclude = seen | set(candidates[head].tolist())
            extra = state.neighbour_candidates(whole, PROFILE_CANDIDATES, exclude)
            candidates, scores, head = _extend_head(state, candidates, scores, head, extra, user)
        ranked = _rank(state, online, candidates, scores, head, history, now, profile)
        if whole is not None:
            affinity = np.zeros(len(candidates))
            affinity[head] = whole.affinity(state.neighbour_index(candidates[head]))
            if (affinity > 0).any():
                ranked, intent = profile_scores(ranked, affinity), "profile"
    else:
        degraded.append("ranking")
        ranked = scores.astype(np.float64)
    clock.lap("ranking")

    # re-ranking: business rules, diversity
    order = np.argsort(-ranked, kind="stable")
    relevance = _relevance(ranked)
    if clock.may_start("reranking"):
        order, relevance = _rerank(state, candidates, relevance, order, query.k)
    else:
        degraded.append("reranking")
    clock.lap("reranking")

    # policy filter: never skipped
    items = _policy_filter(state, query, [int(candidates[i]) for i in order], relevance[order])
    if len(items) < query.k:
        items += _backfill(state, query, popular, seen | {state.position[i] for i, _ in items})
    clock.lap("policy")
    clock.timings["total"] = round(clock.elapsed_ms(), 3)
    return Served(items[: query.k], state.model_version, cold, degraded, clock.timings, intent)


def history_positions(
    state: ServingState, stored: Sequence[str], recent_items: Sequence[str]
) -> list[int]:
    """The user's distinct items, oldest first, each at its latest occurrence.

    `stored` is the online store's list (most recent first), `recent_items` the request's
    session (most recent last, newer than anything stored). The same ordering as training's
    `user_sequences`, so a history gives the same user vector and features online and offline.
    """
    newest_first = [*reversed(recent_items), *stored]
    distinct = dict.fromkeys(state.position[i] for i in newest_first if i in state.position)
    return list(reversed(distinct))


def _popular_positions(state: ServingState, online: OnlineFeatures) -> list[int]:
    top = online.popular(POPULAR_CANDIDATES)
    if top is None:
        return list(state.by_fallback_count[:POPULAR_CANDIDATES].tolist())
    return [state.position[i] for i, _ in top if i in state.position]


def _candidates(
    state: ServingState, user: np.ndarray | None, seen: set[int], popular: list[int]
) -> np.ndarray:
    found: list[int] = []
    if user is not None:
        _, positions = state.index.search(user, RETRIEVAL_DEPTH + len(seen))
        found += positions.tolist()
        if state.indexed < state.size:  # the delta: items added since the index was built
            delta = np.arange(state.indexed, state.size)
            best = delta[np.argsort(-(state.unit[delta] @ user))[:RETRIEVAL_DEPTH]]
            found += best.tolist()
    found += popular
    found += state.fresh.tolist()
    unique = dict.fromkeys(p for p in found if state.alive[p] and p not in seen)
    return np.fromiter(unique, dtype=np.int64, count=len(unique))


def _stats(state: ServingState, online: OnlineFeatures, candidates: np.ndarray) -> ItemStats:
    ids = [state.item_ids[p] for p in candidates.tolist()]
    fetched = online.item_stats(ids)
    if fetched is None:
        return ItemStats(state.fallback_counts[candidates], np.full(len(ids), np.nan))
    counts, last = fetched
    return ItemStats(
        np.array(counts, dtype=np.float64),
        np.array([np.nan if t is None else t for t in last], dtype=np.float64),
    )


def _ranking_head(
    state: ServingState,
    candidates: np.ndarray,
    scores: np.ndarray,
    user: np.ndarray,
    seen: set[int],
    profile: CooccurrenceProfile | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidates, scores, indices of the ranked head), as offline `retrieve` builds lists.

    The head is the `N_CANDIDATES` best-retrieved candidates and, with the history's
    co-occurrence `profile` (given where the ranker uses co-occurrence), the item-item
    source's best `NEIGHBOUR_CANDIDATES` beyond them (appended to the candidates with their
    retrieval scores if retrieval did not find them).
    """
    head = np.argsort(-scores, kind="stable")[:N_CANDIDATES]
    if profile is None:
        return candidates, scores, head
    extra = state.neighbour_candidates(
        profile, NEIGHBOUR_CANDIDATES, seen | set(candidates[head].tolist())
    )
    return _extend_head(state, candidates, scores, head, extra, user)


def _extend_head(
    state: ServingState,
    candidates: np.ndarray,
    scores: np.ndarray,
    head: np.ndarray,
    extra: np.ndarray,
    user: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head with `extra` positions (none in it) added.

    An extra position that retrieval did not find joins the candidates with its retrieval
    score.
    """
    if not len(extra):
        return candidates, scores, head
    new = extra[~np.isin(extra, candidates)]
    candidates = np.concatenate([candidates, new])
    scores = np.concatenate([scores, (state.unit[new] @ user).astype(scores.dtype)])
    extra_at = (candidates[:, None] == extra).argmax(axis=0)  # candidates are unique
    return candidates, scores, np.concatenate([head, extra_at])


def _rank(
    state: ServingState,
    online: OnlineFeatures,
    candidates: np.ndarray,
    scores: np.ndarray,
    head: np.ndarray,
    history: list[int],
    now: float,
    profile: CooccurrenceProfile | None,
) -> np.ndarray:
    """Scores: the ranker's for the candidates at `head` (`_ranking_head`).

    Those are the lists the ranker was fitted on; the other candidates follow below them,
    in retrieval order. `profile` is the history's co-occurrence profile where the ranker
    uses co-occurrence.
    """
    top = candidates[head]
    if state.ranker.uses_item_stats:
        stats = _stats(state, online, top)
    else:  # a ranker without popularity or recency weights: no online-store round trip
        stats = ItemStats(np.zeros(len(top)), np.full(len(top), np.nan))
    # a ranker without a co-occurrence weight has no profile: no neighbour lookups
    cooccurrence = np.zeros(len(top)) if profile is None else _cooccurrence(state, profile, top)
    features = ranking_features(
        scores[head],
        state.categories[top],
        state.categories[history].tolist(),
        stats,
        now,
        cooccurrence,
    )
    head_scores = state.ranker.score(features).astype(np.float64)
    # cosine scores are in [-1, 1]: the tail lands strictly below the head, order kept
    ranked = scores.astype(np.float64) + (head_scores.min() - 3.0 if len(head) else 0.0)
    ranked[head] = head_scores
    return ranked


def _cooccurrence(
    state: ServingState, profile: CooccurrenceProfile, candidates: np.ndarray
) -> np.ndarray:
    """The candidates' co-occurrence feature (0 where the model version has no neighbours)."""
    return profile.affinity(state.neighbour_index(candidates))


def _popularity_scores(
    state: ServingState, online: OnlineFeatures, candidates: np.ndarray
) -> np.ndarray:
    counts = np.asarray(_stats(state, online, candidates).counts, dtype=np.float64)
    return np.asarray(np.log1p(np.maximum(counts, 0.0)), dtype=np.float64)


def _relevance(scores: np.ndarray) -> np.ndarray:
    """Scores mapped to [0, 1] (order kept), so rules and diversity act on one scale."""
    if len(scores) == 0:
        return scores
    low, high = float(scores.min()), float(scores.max())
    return (scores - low) / (high - low) if high > low else np.ones_like(scores)


def _rerank(
    state: ServingState,
    candidates: np.ndarray,
    relevance: np.ndarray,
    order: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Business rules (item `boost` factors, `bury`), then MMR diversity over the head."""
    relevance = relevance.copy()
    for n, position in enumerate(candidates.tolist()):
        policy = state.policies[position]
        if policy.boost != 1.0:
            relevance[n] = min(1.0, relevance[n] * policy.boost)
        if policy.bury:  # below every other item, whatever the diversity term adds
            relevance[n] -= BURY_OFFSET
    order = np.argsort(-relevance, kind="stable")
    head = order[: k * MMR_POOL]
    if len(head) <= 1:
        return order, relevance
    vectors = state.unit[candidates[head]]
    chosen = [0]
    remaining = list(range(1, len(head)))
    max_sim = vectors @ vectors[0]
    while remaining and len(chosen) < k:
        gains = [MMR_LAMBDA * relevance[head[r]] - (1 - MMR_LAMBDA) * max_sim[r] for r in remaining]
        best = remaining.pop(int(np.argmax(gains)))
        chosen.append(best)
        max_sim = np.maximum(max_sim, vectors @ vectors[best])
    picked = head[chosen]
    taken = set(picked.tolist())
    rest = np.array([i for i in order.tolist() if i not in taken], dtype=np.int64)
    return np.concatenate([picked, rest]), relevance


def _allowed(policy: ItemPolicy, category: str | None, query: Query, item_id: str) -> bool:
    if item_id in query.exclude_items:
        return False
    if query.categories is not None and category not in query.categories:
        return False
    return policy.allows(query.user_age, query.country)


def _policy_filter(
    state: ServingState, query: Query, positions: list[int], relevance: np.ndarray
) -> list[tuple[str, float]]:
    names = state.category_names
    out: list[tuple[str, float]] = []
    for position, score in zip(positions, relevance.tolist(), strict=True):
        item_id = state.item_ids[position]
        category = names.get(int(state.categories[position]))
        if _allowed(state.policies[position], category, query, item_id):
            out.append((item_id, round(float(score), 6)))
            if len(out) == query.k:
                break
    return out


def _backfill(
    state: ServingState, query: Query, popular: list[int], taken: set[int]
) -> list[tuple[str, float]]:
    """Further allowed items when too few candidates passed: popular first, then catalog."""
    names = state.category_names
    out: list[tuple[str, float]] = []
    for position in itertools.chain(popular, map(int, state.by_fallback_count)):
        if position in taken or not state.alive[position]:
            continue
        taken.add(position)
        item_id = state.item_ids[position]
        category = names.get(int(state.categories[position]))
        if _allowed(state.policies[position], category, query, item_id):
            out.append((item_id, 0.0))
            if len(out) >= query.k:
                break
    return out
