"""The serving path of one request: features -> retrieval -> ranking -> re-ranking -> policy.

Each stage has a deadline (the running sum of the per-stage budgets). A stage that would
start past its deadline is replaced by its cheap fallback (retrieval: popular and fresh
items; ranking: the retrieval order; re-ranking: none), and the response lists it under
`degraded`. The policy filter has no fallback: it runs on every response.

The ranking, re-ranking and policy stages run the ranking package's components
(`atlasrec.models.ranking`) on the request: what evaluation runs in batch. This module holds
what is serving's own: deadlines, timings, fallbacks, the online store's features and the
index retrieval.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from atlasrec.clock import utcnow
from atlasrec.eventlog.records import ServedRecord
from atlasrec.intents import DefaultOrder, Intent, Order
from atlasrec.models.ranking.default_order import served_order
from atlasrec.models.ranking.features import CooccurrenceProfile, ItemStats
from atlasrec.models.ranking.pipeline import RankingConfig, RankingPipeline
from atlasrec.models.ranking.policy import Entry, PolicyConfig, PolicyFilter
from atlasrec.models.ranking.rerank import RerankConfig, Reranker, relevance
from atlasrec.models.ranking.retrieve import CandidateRetriever, Source
from serving.online import OnlineFeatures
from serving.state import ServingState

RETRIEVAL_DEPTH = 200
POPULAR_CANDIDATES = 50
RANKING = RankingConfig()
"""The ranking stage's settings (the same defaults as evaluation's)."""
RERANK = RerankConfig()
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
    intent: Intent | None = None
    """None: the model version's default order."""
    older_items: frozenset[str] = frozenset()
    """The user's items beyond what the online store keeps (a batch caller reads the whole
    history from the offline store): the profile's pooling counts them too."""


@dataclass
class Served:
    """A response before serialisation."""

    items: list[tuple[str, float]]
    model_version: str
    cold_start: bool
    degraded: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    intent: Order = "next"
    """The order served: `profile` or `blend` only where the history has neighbours."""


def served_record(
    request_id: str,
    query: Query,
    served: Served,
    *,
    arm: str,
    shadow_of: str | None = None,
    policy_violations: int = 0,
    experiment_id: str | None = None,
    teams: str | None = None,
) -> ServedRecord:
    """The request log's record of a served answer (a live, canary or shadow one)."""
    return ServedRecord(
        request_id=request_id,
        served_at=utcnow(),
        model_version=served.model_version,
        user_key=query.user_key,
        k=query.k,
        items=tuple(item_id for item_id, _ in served.items),
        cold_start=served.cold_start,
        degraded=tuple(served.degraded),
        timings_ms=dict(served.timings_ms),
        intent=served.intent,
        arm=arm,
        shadow_of=shadow_of,
        policy_violations=policy_violations,
        experiment_id=experiment_id,
        teams=teams,
    )


class _Clock:
    def __init__(
        self, budgets: Mapping[str, float], pause: Callable[[], object] | None = None
    ) -> None:
        self.pause = pause
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
        if self.pause is not None:  # time paused counts toward no stage and no budget
            self.pause()
            paused = time.perf_counter() - now
            self.start += paused
            self.mark += paused


def recommend(
    state: ServingState,
    online: OnlineFeatures,
    query: Query,
    budgets: Mapping[str, float],
    now: float | None = None,
    pause: Callable[[], object] | None = None,
) -> Served:
    """Run the serving path for one request on one snapshot.

    `pause`, if given, runs between stages (background scoring: wait for live requests);
    its time counts toward no stage's timing and no budget.
    """
    clock = _Clock(budgets, pause)
    degraded: list[str] = []
    intent: Order = "next"
    wanted = served_order(state.order, query.intent)
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
    if user is None or wanted == "popularity":
        ranked = _popularity_scores(state, online, candidates)
        intent = "next" if user is None else "popularity"
    elif clock.may_start("ranking"):
        chosen = DefaultOrder(wanted, state.order.weight)
        older = [state.position[i] for i in query.older_items if i in state.position]
        candidates, ranked, intent = _rank(
            state, online, candidates, scores, user, seen, history, now, chosen, older
        )
    else:
        degraded.append("ranking")
        ranked = scores.astype(np.float64)
    clock.lap("ranking")

    # re-ranking: business rules, diversity
    order = np.argsort(-ranked, kind="stable")
    scaled = _relevance(ranked)
    if clock.may_start("reranking"):
        order, scaled = _rerank(state, candidates, scaled, order, query.k)
    else:
        degraded.append("reranking")
    clock.lap("reranking")

    # policy filter: never skipped
    items = _policy_filter(state, query, [int(candidates[i]) for i in order], scaled[order])
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
    whole: CooccurrenceProfile | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidates, scores, indices of the ranked list): `CandidateRetriever.one`.

    The item-item source pools the history's co-occurrence `profile` (given where the ranker
    uses co-occurrence), the `profile` intent's source its `whole` history profile.
    """
    return CandidateRetriever(RANKING.retrieve).one(
        candidates,
        scores,
        np.fromiter(seen, dtype=np.int64, count=len(seen)),
        _source(state, profile),
        _source(state, whole),
        lambda new: np.asarray(state.unit[new] @ user),
    )


def _source(state: ServingState, profile: CooccurrenceProfile | None) -> Source | None:
    """The item-item source of a history's `profile`, in catalog positions."""
    if profile is None:
        return None
    return lambda n, exclude: state.neighbour_candidates(profile, n, exclude)


def _rank(
    state: ServingState,
    online: OnlineFeatures,
    candidates: np.ndarray,
    scores: np.ndarray,
    user: np.ndarray,
    seen: set[int],
    history: list[int],
    now: float,
    order: DefaultOrder,
    older: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray, Order]:
    """(candidates, scores, the order served): the ranking pipeline on one request.

    The ranked list is what the ranker was fitted on (`_ranking_head`); the other candidates
    follow below it, in retrieval order. The `profile` and `blend` orders use the history
    profile where it has neighbours, pooled over `older` items too.
    """
    pipeline = RankingPipeline(state.ranker, RANKING)
    # one pooling of the history's neighbours feeds the item-item source and the feature
    profile = state.cooccurrence_profile(history)
    whole = None
    if order.order in ("profile", "blend"):
        known = set(history)
        whole = state.history_profile([p for p in older if p not in known] + history)
    candidates, scores, head = _ranking_head(state, candidates, scores, user, seen, profile, whole)
    top = candidates[head]
    features = pipeline.features.one(
        scores[head],
        state.categories[top],
        state.categories[history].tolist(),
        # a ranker without popularity or recency weights: no online-store round trip
        _stats(state, online, top) if pipeline.features.config.item_stats else None,
        now,
        None if profile is None else _cooccurrence(state, profile, top),
    )
    affinity = None if whole is None else whole.affinity(state.neighbour_index(top))
    ranked, served = pipeline.rank_one(features, head, scores, affinity, order)
    return candidates, ranked, served


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
    """Scores mapped to [0, 1] (order kept): `rerank.relevance`."""
    return relevance(scores)


def _rerank(
    state: ServingState,
    candidates: np.ndarray,
    scaled: np.ndarray,
    order: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Business rules (item `boost` factors, `bury`), then MMR diversity: `Reranker.one`."""
    policies = [state.policies[p] for p in candidates.tolist()]
    boosts = np.array([p.boost for p in policies], dtype=np.float64)
    bury = np.array([p.bury for p in policies], dtype=bool)
    return Reranker(RERANK).one(
        scaled, boosts, bury, lambda at: np.asarray(state.unit[candidates[at]]), k
    )


def _policy(query: Query) -> PolicyFilter:
    return PolicyFilter(
        PolicyConfig(query.user_age, query.country, query.categories, query.exclude_items)
    )


def _entries(state: ServingState, scored: Iterable[tuple[int, float]]) -> Iterator[Entry]:
    """(id, category, policy, score) of each (position, score), as read."""
    names = state.category_names
    for position, score in scored:
        category = names.get(int(state.categories[position]))
        yield state.item_ids[position], category, state.policies[position], score


def _policy_filter(
    state: ServingState, query: Query, positions: list[int], scaled: np.ndarray
) -> list[tuple[str, float]]:
    scored = zip(positions, scaled.tolist(), strict=True)
    return _policy(query).one(_entries(state, scored), query.k)


def _backfill(
    state: ServingState, query: Query, popular: list[int], taken: set[int]
) -> list[tuple[str, float]]:
    """Further allowed items when too few candidates passed: popular first, then catalog."""

    def unseen() -> Iterator[tuple[int, float]]:
        for position in itertools.chain(popular, map(int, state.by_fallback_count)):
            if position not in taken and state.alive[position]:
                taken.add(position)
                yield position, 0.0

    return _policy(query).one(_entries(state, unseen()), query.k)
