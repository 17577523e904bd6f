"""A tenant's drift signals: its training snapshot against the traffic served since.

Samples of interactions, each oldest first (`split_samples`):

- `basis`: the older training rows. They fix what the reference and current samples are
  described by (item popularity buckets, top categories), so both are described alike: an
  item the basis never saw is `unseen` in either;
- `reference`: the newest training rows;
- `current`: the newest rows after the training snapshot, as many as `reference` (equal
  sizes keep per-user counts comparable);
- `launch` and `recent`: the oldest and the newest rows after the snapshot, as many each.

Five signals (`atlasrec.evaluation.drift` tests them):

- `item_popularity`: each interaction's item by its popularity decile in the basis;
- `category_mix`: each interaction's item category (the basis's top 20, `other`, `none`);
- `user_activity`: each active user's interaction count in the sample, in powers of two
  (users are the units: a user's rows are not independent of each other);
- `request_embeddings`: the user vectors the model computes from each user's history in
  the sample (what a request is scored with);
- `scores`: each such user's best retrieval score (over at most `ITEM_SAMPLE` items).

The first three compare `current` with `reference`. The model's two compare `recent` with
`launch`, the traffic the model first met: on its own training rows a model scores higher
than on any new traffic (it was fitted to them), so they would alarm on unchanged traffic.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from atlasrec.evaluation.drift import (
    MIN_VECTORS,
    SignalDrift,
    categorical_drift,
    embedding_drift,
    numerical_drift,
)
from atlasrec.models.bundle import ModelBundle

SIGNALS = ("item_popularity", "category_mix", "user_activity", "request_embeddings", "scores")
POPULARITY_BUCKETS = 10
TOP_CATEGORIES = 20
ACTIVITY_BUCKETS = 7
"""Users' interaction counts: 1, 2-3, 4-7, ... 32-63, and 64 or more."""
MAX_USERS = 2_000
"""Users per sample whose vectors are computed."""
HISTORY = 50
ITEM_SAMPLE = 200_000
UNSEEN = "unseen"


@dataclass(frozen=True)
class Window:
    """Interactions, oldest first: who (user keys) met what (item ids)."""

    users: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def tail(self, n: int) -> Window:
        """The newest `n` rows."""
        start = max(len(self) - n, 0)
        return Window(self.users[start:], self.items[start:])

    def head(self, n: int) -> Window:
        """The oldest `n` rows."""
        return Window(self.users[:n], self.items[:n])


@dataclass(frozen=True)
class Samples:
    """The training basis and reference, and the current traffic of the same size."""

    basis: Window
    reference: Window
    current: Window
    launch: Window
    recent: Window


def split_samples(training: Window, first: Window, last: Window, *, cap: int) -> Samples:
    """Samples of at most `cap` rows each, from the training rows and those after them.

    `first` and `last` are the oldest and the newest rows after the training snapshot (the
    same rows where there are few). The reference takes at most half the training rows;
    `launch` and `recent` at most half the rows after it, without overlap.
    """
    size = min(len(last), len(training) // 2, cap)
    reference = training.tail(size)
    basis = training.head(len(training) - size).tail(cap * POPULARITY_BUCKETS)
    after = min(len(first), len(last)) // 2
    return Samples(basis, reference, last.tail(size), first.head(after), last.tail(after))


class UserEncoder(Protocol):
    """What the model says about users: their vectors and their best retrieval scores."""

    def vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """Unit user vectors, one per history holding an item the model knows."""

    def top_scores(self, vectors: np.ndarray) -> np.ndarray:
        """Each vector's best score over the model's items."""


class BundleEncoder:
    """A `UserEncoder` over a published model bundle (the user tower serving uses)."""

    def __init__(self, bundle: ModelBundle, *, seed: int = 0) -> None:
        self._model = bundle.model
        self._raw = bundle.model.raw_item_vectors()
        self._position = {item: n for n, item in enumerate(bundle.item_ids)}
        rows = np.arange(len(self._raw))
        if len(rows) > ITEM_SAMPLE:
            rows = np.random.default_rng(seed).choice(rows, ITEM_SAMPLE, replace=False)
        sample = self._raw[rows]
        self._unit = sample / np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12)

    def vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """Unit user vectors of the histories holding a trained item (others are skipped)."""
        known = [[self._position[i] for i in h if i in self._position] for h in histories]
        known = [positions for positions in known if positions]
        if not known:
            return np.zeros((0, self._raw.shape[1]), dtype=np.float32)
        return self._model.encode_vector_histories([self._raw[p] for p in known])

    def top_scores(self, vectors: np.ndarray) -> np.ndarray:
        """Each vector's best cosine score over the (sampled) trained items."""
        if not len(vectors):
            return np.zeros(0)
        return np.asarray((vectors @ self._unit.T).max(axis=1), dtype=np.float64)


def drift_signals(
    samples: Samples,
    categories: Mapping[str, str | None],
    encoder: UserEncoder | None,
    *,
    seed: int = 0,
) -> list[SignalDrift]:
    """Every signal (`SIGNALS`); without an encoder (no model yet) the model's two are absent."""
    basis, ref, cur = samples.basis, samples.reference, samples.current
    buckets = popularity_buckets(basis.items)
    basis_categories = Counter(categories.get(i) for i in basis.items)
    top = {c for c, _ in basis_categories.most_common(TOP_CATEGORIES)}
    signals = [
        categorical_drift(
            "item_popularity",
            [buckets.get(i, UNSEEN) for i in ref.items],
            [buckets.get(i, UNSEEN) for i in cur.items],
        ),
        categorical_drift(
            "category_mix",
            [_category(categories, i, top) for i in ref.items],
            [_category(categories, i, top) for i in cur.items],
        ),
        categorical_drift("user_activity", activity_levels(ref), activity_levels(cur)),
    ]
    if encoder is None:
        return signals
    rng = np.random.default_rng(seed)
    ref_vectors = encoder.vectors(histories(samples.launch, rng))
    cur_vectors = encoder.vectors(histories(samples.recent, rng))
    return [
        *signals,
        embedding_drift("request_embeddings", ref_vectors, cur_vectors, seed=seed),
        numerical_drift(
            "scores",
            encoder.top_scores(ref_vectors),
            encoder.top_scores(cur_vectors),
            min_n=MIN_VECTORS,
        ),
    ]


def popularity_buckets(items: np.ndarray) -> dict[str, int]:
    """Item -> its popularity decile (0: the items of the first 10% of interactions)."""
    counts = Counter(items.tolist()).most_common()
    if not counts:
        return {}
    mass = np.cumsum([c for _, c in counts], dtype=np.float64)
    before = np.r_[0.0, mass[:-1]] / mass[-1]
    deciles = np.minimum((before * POPULARITY_BUCKETS).astype(int), POPULARITY_BUCKETS - 1)
    return {item: int(d) for (item, _), d in zip(counts, deciles, strict=True)}


def activity_levels(window: Window) -> list[int]:
    """Each user's interaction count in the window, as floor(log2(count)), capped."""
    counts = Counter(window.users.tolist()).values()
    return [min(int(c).bit_length() - 1, ACTIVITY_BUCKETS - 1) for c in counts]


def histories(window: Window, rng: np.random.Generator) -> list[list[str]]:
    """The last `HISTORY` items (oldest first) of at most `MAX_USERS` users of the window."""
    by_user: dict[str, list[str]] = defaultdict(list)
    for user, item in zip(window.users.tolist(), window.items.tolist(), strict=True):
        by_user[user].append(item)
    users = sorted(by_user)
    if len(users) > MAX_USERS:
        users = sorted(rng.choice(users, MAX_USERS, replace=False).tolist())
    return [by_user[u][-HISTORY:] for u in users]


def _category(categories: Mapping[str, str | None], item: str, top: set[str | None]) -> str:
    category = categories.get(item)
    if category is None:
        return "none"
    return category if category in top else "other"
