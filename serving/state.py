"""What one tenant's requests are served from: an immutable snapshot, swapped whole.

A `ServingState` holds the model version, the catalog (ids, categories, policies), the item
vectors and the retrieval index. Requests read `runtime.state` once and use that snapshot
throughout, so a model hot swap or a catalog update (which build a new snapshot off the
request path and replace the reference) never shows a request half of each.

Positions index the catalog. Items added or changed after the index was built are appended
(a changed item's old position is retired), searched exactly in a small "delta" until the
next rebuild, so catalog updates are recommendable at once without a full rebuild.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from atlasrec.catalog import ItemPolicy, parse_policy
from atlasrec.intents import DefaultOrder
from atlasrec.models.bundle import ModelBundle
from atlasrec.models.ease_profile import ProfileWeights
from atlasrec.models.ranking.features import (
    NO_CATEGORY,
    UNKNOWN_ITEM,
    CooccurrenceProfile,
    cooccurrence_profile,
    history_profile,
)
from atlasrec.models.ranking.ranker import DEFAULT_RANKER, LinearRanker
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig
from serving.retrieval import VectorIndex, build_index

FRESH = 20
POOLING = TwoTowerConfig()
"""Before a model exists, histories are pooled as the user tower's input is (same length
and recency half-life)."""
CONTENT_ONLY = "content-embeddings"
"""`model_version` of a tenant served before its first trained model."""


@dataclass(frozen=True)
class CatalogItem:
    """One item as the serving path needs it."""

    item_id: str
    category: str | None
    attributes: Mapping[str, Any]
    content: np.ndarray
    content_sha: str
    added_at: float


@dataclass(frozen=True)
class ServingState:
    """One tenant's immutable serving snapshot."""

    model_version: str
    model: TwoTower | None
    ranker: LinearRanker
    lineage: Mapping[str, Any]
    item_ids: tuple[str, ...]
    position: Mapping[str, int]
    """Live position of each item id (retired positions are absent)."""
    alive: np.ndarray
    raw: np.ndarray
    """Unnormalised item vectors (what the user tower pools)."""
    unit: np.ndarray
    """Unit-norm item vectors (what retrieval scores)."""
    categories: np.ndarray
    category_codes: Mapping[str, int]
    policies: tuple[ItemPolicy, ...]
    added_at: np.ndarray
    index: VectorIndex
    indexed: int
    """Positions below this are in `index`; the rest (the delta) are searched exactly."""
    content_shas: tuple[str, ...]
    fallback_counts: np.ndarray
    """Interaction counts per position, read from the database at load (used when the
    online store is unreachable)."""
    neighbours: sp.csr_matrix | None = None
    """The model's co-occurrence neighbours (rows: the model's training order), where it has
    them (non-DP models; `with_neighbours`)."""
    neighbour_rows: Mapping[str, int] = field(default_factory=dict)
    """Item id -> row of `neighbours`."""
    position_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Catalog position -> row of `neighbours` (`UNKNOWN_ITEM` for untrained items)."""
    row_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Row of `neighbours` -> the item's current catalog position (-1: not in the catalog)."""
    profile: ProfileWeights | None = None
    """The model's dense EASE head (rows as `neighbours`'), where it has one."""
    profile_slots: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Row of `neighbours` -> its place in `profile`'s head (-1 outside it)."""
    order: DefaultOrder = field(default_factory=DefaultOrder)
    """The order served without an intent (the model version's choice)."""

    def neighbour_index(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows of `neighbours` for catalog positions (`UNKNOWN_ITEM` for untrained items)."""
        if self.neighbours is None:
            return np.full(len(positions), UNKNOWN_ITEM, dtype=np.int64)
        return np.asarray(self.position_rows[np.asarray(positions, dtype=np.int64)])

    def cooccurrence_profile(self, history: Sequence[int]) -> CooccurrenceProfile | None:
        """The co-occurrence profile of a history of positions, for the ranking stage.

        None where the ranker does not weigh co-occurrence (nothing to pool); empty where it
        does but the model version has no neighbours.
        """
        if not self.ranker.uses_cooccurrence:
            return None
        return cooccurrence_profile(self.neighbours, self.neighbour_index(history))

    def history_profile(self, history: Sequence[int]) -> CooccurrenceProfile | None:
        """The `profile` and `blend` orders' pooling of a history of positions.

        The dense EASE head's where the model has one, else its neighbours'; None without.
        """
        if self.neighbours is None:
            return None
        rows = self.neighbour_index(history)
        if self.profile is not None:
            return self.profile.profile(rows, self.profile_slots)
        return history_profile(self.neighbours, rows)

    def neighbour_candidates(
        self, profile: CooccurrenceProfile, n: int, exclude: Iterable[int]
    ) -> np.ndarray:
        """Live positions of the item-item source's best `n` candidates for `profile`.

        `exclude` holds positions; see `CooccurrenceProfile.best`. A candidate retired since
        the model was trained is dropped.
        """
        rows = profile.best(n, self.neighbour_index(np.fromiter(exclude, dtype=np.int64)))
        positions = self.row_positions[rows] if len(rows) else rows
        positions = positions[positions >= 0]
        return np.asarray(positions[self.alive[positions]], dtype=np.int64)

    @cached_property
    def fresh(self) -> np.ndarray:
        """The live positions of the `FRESH` most recently added or updated items."""
        n = min(FRESH, self.size)
        if n == 0:
            return np.zeros(0, np.int64)
        added = np.where(self.alive, self.added_at, -np.inf)
        return np.argpartition(-added, n - 1)[:n]

    @cached_property
    def by_fallback_count(self) -> np.ndarray:
        """Live positions by their load-time interaction counts, highest first."""
        order = np.argsort(-self.fallback_counts, kind="stable")
        return np.asarray(order[self.alive[order]], dtype=np.int64)

    @cached_property
    def category_names(self) -> dict[int, str]:
        """Category code -> name."""
        return {code: name for name, code in self.category_codes.items()}

    @property
    def size(self) -> int:
        """Number of positions (live and retired)."""
        return len(self.item_ids)

    def user_vector(self, history: Sequence[int]) -> np.ndarray | None:
        """Unit-norm user vector from positions (oldest first); None when it cannot be formed.

        With a model, the user tower pools the items' raw vectors (as in training); before the
        first model, the recency-weighted mean of the items' content embeddings.
        """
        if self.model is not None:
            vector: np.ndarray = self.model.encode_vector_histories([self.raw[list(history)]])[0]
            return vector
        if not history:
            return None
        recent = list(history)[-POOLING.history :]
        age = np.arange(len(recent) - 1, -1, -1)
        weights = np.power(0.5, age / POOLING.recency_half_life)[:, None]
        pooled = (self.raw[recent] * weights).sum(0)
        norm = float(np.linalg.norm(pooled))
        return None if norm == 0 else (pooled / norm).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def _codes(
    categories: Sequence[str | None], known: Mapping[str, int]
) -> tuple[np.ndarray, dict[str, int]]:
    codes = dict(known)
    out = np.empty(len(categories), dtype=np.int64)
    for n, category in enumerate(categories):
        out[n] = NO_CATEGORY if category is None else codes.setdefault(category, len(codes))
    return out, codes


def build_state(
    items: Sequence[CatalogItem],
    bundle: ModelBundle | None,
    counts: Mapping[str, float],
) -> ServingState:
    """A fresh snapshot over the whole catalog, with a newly built index."""
    ids = [item.item_id for item in items]
    content = (
        np.stack([item.content for item in items])
        if items
        else np.zeros((0, 384), dtype=np.float32)
    )
    if bundle is None:
        raw = content.astype(np.float32)
    else:
        raw = np.zeros((len(items), bundle.model.config.dim), dtype=np.float32)
        trained = {item_id: n for n, item_id in enumerate(bundle.item_ids)}
        known = [n for n, item_id in enumerate(ids) if item_id in trained]
        if known:
            raw[known] = bundle.model.raw_item_vectors()[[trained[ids[n]] for n in known]]
        new = [n for n, item_id in enumerate(ids) if item_id not in trained]
        if new:
            raw[new] = bundle.model.content_item_vectors(content[new])
    unit = _unit(raw)
    categories, codes = _codes([item.category for item in items], {})
    state = ServingState(
        model_version=CONTENT_ONLY if bundle is None else bundle.version,
        model=None if bundle is None else bundle.model,
        ranker=DEFAULT_RANKER if bundle is None else bundle.ranker,
        lineage={} if bundle is None else bundle.lineage,
        item_ids=tuple(ids),
        position={item_id: n for n, item_id in enumerate(ids)},
        alive=np.ones(len(ids), dtype=bool),
        raw=raw,
        unit=unit,
        categories=categories,
        category_codes=codes,
        policies=tuple(parse_policy(item.attributes) for item in items),
        added_at=np.array([item.added_at for item in items], dtype=np.float64),
        index=build_index(unit),
        indexed=len(ids),
        content_shas=tuple(item.content_sha for item in items),
        fallback_counts=np.array([counts.get(i, 0.0) for i in ids], dtype=np.float64),
    )
    if bundle is None or (bundle.neighbours is None and bundle.profile is None):
        return state
    size = len(bundle.item_ids)
    # a DP model ships DP-EASE without neighbours: an empty matrix maps its rows
    empty = sp.csr_matrix((size, size), dtype=np.float32)
    neighbours = empty if bundle.neighbours is None else bundle.neighbours
    state = with_neighbours(state, neighbours, bundle.item_ids)
    if bundle.profile is None:
        return replace(state, order=bundle.order)
    return replace(
        state, profile=bundle.profile, profile_slots=bundle.profile.slots, order=bundle.order
    )


def with_neighbours(
    state: ServingState, neighbours: sp.csr_matrix, item_ids: Sequence[str]
) -> ServingState:
    """`state` serving `neighbours`, whose rows are `item_ids` (the model's training order)."""
    rows = {item_id: n for n, item_id in enumerate(item_ids)}
    position_rows = np.array([rows.get(i, UNKNOWN_ITEM) for i in state.item_ids], dtype=np.int64)
    row_positions = np.array([state.position.get(i, -1) for i in item_ids], dtype=np.int64)
    return replace(
        state,
        neighbours=neighbours,
        neighbour_rows=rows,
        position_rows=position_rows,
        row_positions=row_positions,
    )


def with_items(state: ServingState, items: Sequence[CatalogItem]) -> ServingState:
    """A snapshot with `items` upserted, leaving the index as it is.

    An item whose content is unchanged keeps its position (its category and policy are
    updated in place in the copy); a new or changed item gets a new position in the delta.
    """
    policies = list(state.policies)
    alive = state.alive.copy()
    categories = state.categories.copy()
    codes = dict(state.category_codes)
    position = dict(state.position)
    appended: list[CatalogItem] = []
    for item in items:
        at = position.get(item.item_id)
        if at is not None and state.content_shas[at] == item.content_sha:
            policies[at] = parse_policy(item.attributes)
            codes_of_one, codes = _codes([item.category], codes)
            categories[at] = codes_of_one[0]
            continue
        if at is not None:
            alive[at] = False  # retired: its vector is stale
        position[item.item_id] = state.size + len(appended)
        appended.append(item)
    if not appended:
        return replace(
            state,
            policies=tuple(policies),
            categories=categories,
            category_codes=codes,
        )
    trained = state.neighbour_rows  # empty without neighbours
    rows = [trained.get(item.item_id, UNKNOWN_ITEM) for item in appended] if trained else []
    row_positions = state.row_positions.copy()
    for n, row in enumerate(rows):
        if row != UNKNOWN_ITEM:  # a trained item re-added with new content: its row follows
            row_positions[row] = state.size + n
    content = np.stack([item.content for item in appended]).astype(np.float32)
    raw = content if state.model is None else state.model.content_item_vectors(content)
    new_categories, codes = _codes([item.category for item in appended], codes)
    return replace(
        state,
        item_ids=state.item_ids + tuple(item.item_id for item in appended),
        position=position,
        alive=np.concatenate([alive, np.ones(len(appended), dtype=bool)]),
        raw=np.vstack([state.raw, raw]),
        unit=np.vstack([state.unit, _unit(raw)]),
        categories=np.concatenate([categories, new_categories]),
        category_codes=codes,
        policies=(*policies, *(parse_policy(item.attributes) for item in appended)),
        added_at=np.concatenate([state.added_at, [item.added_at for item in appended]]),
        content_shas=state.content_shas + tuple(item.content_sha for item in appended),
        fallback_counts=np.concatenate([state.fallback_counts, np.zeros(len(appended))]),
        position_rows=np.concatenate([state.position_rows, np.array(rows, dtype=np.int64)]),
        row_positions=row_positions,
    )
