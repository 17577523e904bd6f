"""The ranking stage's offline side: leakage-free training lists, fitting, re-ranking.

Training lists come from a cut of a tenant's log (`ranking_cut`): each user with at least 2
distinct items has the latest one held out (`temporal_leave_last_out`) and, with
`MID_HISTORY` lists, each user with at least 2 distinct items left then has one more, drawn
at random, held out too. A two-tower model trained on the rest (the *prefix* log, which
keeps no row of any held-out pair) retrieves the top-N unseen candidates for the user's
prefix history, the item-item source adds its best `NEIGHBOUR_CANDIDATES` (`retrieve`), and
the features (`atlasrec.features.ranking_features`, the definition serving uses) of a
latest-item list are computed as of the held-out interaction's time `t`:

- item statistics (weighted counts, last-seen times) count only prefix rows with ts < t,
  i.e. what an online store would have held just before the user's next interaction,
  less the other users' held-out rows (so no held-out interaction is ever a feature);
- `now` is `t` itself: the moment the list would have been served;
- the item-item neighbours (`atlasrec.models.cooccurrence`) come from the prefix log (which
  holds no held-out pair, so a user's own next item never raises its feature).

A mid-history list asks what serving asks of a user whose history has a gap: its features
are computed as of the user's last prefix row (statistics over prefix rows with ts <= that
time), as at evaluation time, where the next interaction's time is unknown and a user's
features are computed as of their last known interaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from atlasrec.evaluation import Interactions, random_user_split, temporal_leave_last_out
from atlasrec.features import (
    FEATURES,
    NO_CATEGORY,
    CooccurrenceProfile,
    ItemStats,
    cooccurrence_affinity,
    cooccurrence_candidates,
    history_profile,
    ranking_features,
)
from atlasrec.intents import PROFILE_CANDIDATES, Intent, profile_scores
from atlasrec.models.cooccurrence import head_size, item_neighbours
from atlasrec.models.ranker import (
    DEFAULT_RANKER,
    LinearRanker,
    RankingLists,
    fit_ranker,
    prior_ranker,
    select_ranker,
)
from atlasrec.models.recommender import user_sequences
from atlasrec.models.training import Progress, TrainReport, train
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig

N_CANDIDATES = 100
"""Candidates retrieved per user by the two-tower model for the ranker (lists and re-ranking)."""

NEIGHBOUR_CANDIDATES = 50
"""Further candidates per user from the item-item source, where the ranker uses it."""

MAX_LISTS = 50_000
"""Training lists of each kind at most (a seeded sample of users beyond that)."""

MID_HISTORY = False
"""Whether the ranker also learns from mid-history held-out items, not only the latest.

Off: on ml-latest-small such lists raised the random split's NDCG@10 by 18% and cost the
temporal split (next-item, what serving answers) 13% (docs/benchmarks.md, ranker section).
"""

_USER_BATCH = 1024


def category_codes(categories: Sequence[str | None]) -> np.ndarray:
    """Integer category codes per item (sorted names -> 0, 1, ...; None -> NO_CATEGORY)."""
    names = {name: n for n, name in enumerate(sorted({c for c in categories if c is not None}))}
    return np.array([NO_CATEGORY if c is None else names[c] for c in categories], dtype=np.int64)


class StatsIndex:
    """Item statistics of an interaction log as of any time, without looking past it."""

    def __init__(self, log: Interactions) -> None:
        order = np.lexsort((log.ts, log.items))
        self._times = np.unique(log.ts)
        self._stride = np.int64(len(self._times) + 1)
        ranks = np.searchsorted(self._times, log.ts[order])
        self._keys = log.items[order] * self._stride + ranks
        self._ts = log.ts[order].astype(np.float64)
        self._cum = np.concatenate([[0.0], np.cumsum(log.weights[order], dtype=np.float64)])
        self._start = np.searchsorted(log.items[order], np.arange(log.n_items + 1))

    def as_of(self, items: np.ndarray, at: np.ndarray, *, inclusive: bool) -> ItemStats:
        """Stats of `items` [n, c] over rows with ts < `at` [n] (ts <= `at` if inclusive)."""
        rank = np.searchsorted(self._times, np.asarray(at), side="right" if inclusive else "left")
        pos = np.searchsorted(self._keys, items * self._stride + rank[:, None], side="left")
        start = self._start[items]
        counts = self._cum[pos] - self._cum[start]
        seen = pos > start
        last = np.where(seen, self._ts[np.maximum(pos - 1, 0)], np.nan)
        return ItemStats(counts=counts, last_seen=last)


def retrieve(
    model: TwoTower,
    histories: Sequence[np.ndarray],
    n: int,
    neighbours: sp.csr_matrix | None = None,
    n_neighbours: int = NEIGHBOUR_CANDIDATES,
    profiles: Sequence[CooccurrenceProfile] | None = None,
    n_profile: int = PROFILE_CANDIDATES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates per history: (items, cosine scores, valid mask), each [users, width].

    The top-`n` unseen items by the two-tower model (by score, ties by item index), then,
    with `neighbours`, up to `n_neighbours` more from the item-item source
    (`cooccurrence_candidates`), then, with `profiles` (one per history: the `profile`
    intent's), up to `n_profile` more from each profile's best, each source best first.
    Rows are padded (mask False) where fewer exist.
    """
    items_vectors = model.all_item_vectors()
    n = min(n, model.n_items)
    width = n + (n_neighbours if neighbours is not None else 0)
    width += n_profile if profiles is not None else 0
    out_items = np.zeros((len(histories), width), dtype=np.int64)
    out_scores = np.zeros((len(histories), width), dtype=np.float32)
    out_mask = np.zeros((len(histories), width), dtype=bool)
    for start in range(0, len(histories), _USER_BATCH):
        batch = histories[start : start + _USER_BATCH]
        scores = model.encode_histories([h.tolist() for h in batch]) @ items_vectors.T
        for row, seen in enumerate(batch):
            scores[row, seen] = -np.inf
        top = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < scores.shape[1] else None
        for row, seen in enumerate(batch):
            r = start + row
            cand = top[row] if top is not None else np.arange(scores.shape[1])
            s = scores[row, cand]
            order = np.lexsort((cand, -s))
            cand = cand[order][np.isfinite(s[order])]
            if neighbours is not None:
                exclude = np.concatenate([seen, cand])
                extra = cooccurrence_candidates(neighbours, seen, n_neighbours, exclude)
                cand = np.concatenate([cand, extra])
            if profiles is not None:
                extra = profiles[r].best(n_profile, np.concatenate([seen, cand]))
                cand = np.concatenate([cand, extra])
            out_items[r, : len(cand)] = cand
            out_scores[r, : len(cand)] = scores[row, cand]  # unseen items: all finite
            out_mask[r, : len(cand)] = True
    return out_items, out_scores, out_mask


def candidate_features(
    items: np.ndarray,
    scores: np.ndarray,
    mask: np.ndarray,
    histories: Sequence[np.ndarray],
    codes: np.ndarray,
    stats: ItemStats,
    now: np.ndarray,
    neighbours: sp.csr_matrix | None,
) -> np.ndarray:
    """Feature tensor [users, candidates, len(FEATURES)] via `ranking_features`, per user."""
    out = np.zeros((*items.shape, len(FEATURES)), dtype=np.float32)
    for row, history in enumerate(histories):
        valid = mask[row]
        out[row, valid] = ranking_features(
            scores[row, valid],
            codes[items[row, valid]],
            codes[history].tolist(),
            ItemStats(stats.counts[row, valid], stats.last_seen[row, valid]),
            float(now[row]),
            cooccurrence_affinity(neighbours, history, items[row, valid]),
        )
    return out


@dataclass(frozen=True)
class RankingCut:
    """What the ranker's lists hold out of a log: per user, the latest item, and one more."""

    prefix: Interactions
    """The log without a row of any held-out pair: what the list model trains on."""
    latest: dict[int, int]
    """User -> their latest item (users with at least 2 distinct items)."""
    middle: dict[int, int]
    """User -> a random earlier item (users with at least 2 distinct items before the latest)."""


def ranking_cut(
    data: Interactions, *, mid_history: bool = MID_HISTORY, seed: int = 0
) -> RankingCut:
    """Hold out each user's latest item and, with `mid_history`, one random earlier one."""
    latest = temporal_leave_last_out(data)
    if not mid_history:
        return RankingCut(latest.train, _single(latest.test), {})
    # a vanishing fraction holds out exactly one item of each user with 2 or more
    middle = random_user_split(latest.train, test_fraction=1e-9, seed=seed)
    return RankingCut(middle.train, _single(latest.test), _single(middle.test))


def _single(test: dict[int, np.ndarray]) -> dict[int, int]:
    return {u: int(items[0]) for u, items in test.items()}


def build_ranking_lists(
    model: TwoTower,
    data: Interactions,
    codes: np.ndarray,
    *,
    n_candidates: int = N_CANDIDATES,
    max_lists: int = MAX_LISTS,
    mid_history: bool = MID_HISTORY,
    seed: int = 0,
    cut: RankingCut | None = None,
) -> RankingLists:
    """The lists of `ranking_cut(data)`: latest-item lists first, then mid-history ones.

    `cut` is that cut where the caller has made it already (`mid_history` and `seed` then
    play no part). `model` must have been trained on the cut's prefix log only. A
    latest-item list's statistics come from prefix rows strictly before the held-out
    interaction; a mid-history list's from prefix rows up to the user's last prefix row.
    """
    if cut is None:
        cut = ranking_cut(data, mid_history=mid_history, seed=seed)
    sequences = user_sequences(cut.prefix)
    neighbours = item_neighbours(sequences, data.n_items)
    stats = StatsIndex(cut.prefix)
    parts = []
    for held_out, at, inclusive in (
        (cut.latest, last_times(data), False),  # the held-out row is the user's latest
        (cut.middle, last_times(cut.prefix), True),
    ):
        users = np.array(sorted(held_out), dtype=np.int64)
        if len(users) > max_lists:
            users = np.sort(np.random.default_rng(seed).choice(users, max_lists, replace=False))
        held = np.array([held_out[int(u)] for u in users], dtype=np.int64)
        histories = [sequences[u] for u in users.tolist()]
        items, scores, mask = retrieve(model, histories, n_candidates, neighbours)
        as_of = stats.as_of(items, at[users], inclusive=inclusive)
        features = candidate_features(
            items, scores, mask, histories, codes, as_of, at[users], neighbours
        )
        hit = (items == held[:, None]) & mask
        positive = np.where(hit.any(1), hit.argmax(1), -1)
        parts.append(RankingLists(features, mask, positive, users))
    return RankingLists.concatenate(parts)


def model_ranker(model: TwoTower) -> LinearRanker:
    """The ranker that reproduces `model`'s own scoring: with its popularity prior, if any."""
    if model.popularity_weight == 0.0:
        return DEFAULT_RANKER
    return prior_ranker(model.config.temperature, model.popularity_weight)


def last_times(log: Interactions) -> np.ndarray:
    """Each user's latest interaction time (float64; NaN for users without rows)."""
    last = np.full(log.n_users, -np.inf)
    np.maximum.at(last, log.users, log.ts.astype(np.float64))
    return np.where(np.isfinite(last), last, np.nan)


@dataclass
class RankedModel:
    """A retrieval model with the ranker fitted for it, and how both were obtained."""

    model: TwoTower
    report: TrainReport
    ranker: LinearRanker
    lineage: dict[str, Any]
    neighbours: sp.csr_matrix | None
    """Co-occurrence neighbours over all of the training data (the ranker's feature and
    source where it weighs them; the `profile` intent's pooling)."""


def train_with_ranker(
    content: np.ndarray,
    codes: np.ndarray,
    data: Interactions,
    config: TwoTowerConfig,
    *,
    retrain: bool = True,
    n_candidates: int = N_CANDIDATES,
    init_backbone: dict[str, torch.Tensor] | None = None,
    progress: Progress | None = None,
    mid_history: bool = MID_HISTORY,
) -> RankedModel:
    """Train the two-tower model on `data` and fit its ranker without leakage.

    A model trained on the prefix of `ranking_cut` builds the ranker's lists. With `retrain`
    the returned model is then trained again on all of `data`; without, the prefix model is
    returned (half the training time; it lacks each user's latest interaction). The ranker
    is `DEFAULT_RANKER` unless the fitted one beats it in cross-validation. Both trainings
    start from `init_backbone` when given. Neither has a popularity prior (that is for DP
    runs): the item-id residuals learn popularity here.
    """
    started = time.perf_counter()
    cut = ranking_cut(data, mid_history=mid_history)
    again = retrain and len(cut.latest) > 0  # without held-out users the prefix is all data
    phases = 2 if again else 1

    def phase(offset: int) -> Progress | None:
        if progress is None:
            return None
        report_to = progress  # one bar over both trainings
        return lambda epoch, epochs, loss: report_to(offset + epoch, phases * epochs, loss)

    prefix_model, prefix_report = train(
        content,
        user_sequences(cut.prefix),
        config,
        init_backbone=init_backbone,
        progress=phase(0),
    )
    fit_started = time.perf_counter()
    lists = build_ranking_lists(prefix_model, data, codes, n_candidates=n_candidates, cut=cut)
    ranker, entry = select_ranker(fit_ranker(lists, seed=config.seed))
    entry["fit_seconds"] = round(time.perf_counter() - fit_started, 2)
    entry["prefix_train_seconds"] = round(prefix_report.seconds, 2)
    entry["retrieval_model"] = "retrained on all data" if again else "the prefix model"
    entry["neighbours"] = {"weighting": "ease", "head_items": head_size(data.n_items)}
    entry["mid_history_lists"] = mid_history
    sequences = user_sequences(data)
    if again:
        model, report = train(
            content,
            sequences,
            config,
            init_backbone=init_backbone,
            progress=phase(config.epochs),
        )
    else:
        model, report = prefix_model, prefix_report
    neighbours = item_neighbours(sequences, data.n_items)
    entry["total_seconds"] = round(time.perf_counter() - started, 2)
    return RankedModel(model, report, ranker, entry, neighbours)


def rerank(
    model: TwoTower,
    ranker: LinearRanker,
    log: Interactions,
    codes: np.ndarray,
    users: np.ndarray,
    k: int,
    *,
    neighbours: sp.csr_matrix | None = None,
    n_candidates: int = N_CANDIDATES,
    intent: Intent = "next",
) -> np.ndarray:
    """Top-`k` unseen items per user: `retrieve`'s candidates, re-ranked as of the last row.

    With `neighbours`, the candidates include the item-item source's (where the ranker
    weighs co-occurrence) and, for the `profile` intent, the history profile's best
    `PROFILE_CANDIDATES`, ordered as serving orders them (`atlasrec.intents`). Rows are
    padded with -1 when fewer than `k` unseen items exist.
    """
    sequences = user_sequences(log)
    histories = [sequences[u] for u in users.tolist()]
    source = neighbours if ranker.uses_cooccurrence else None  # as serving: `_ranking_head`
    profiles = None
    if intent == "profile" and neighbours is not None:
        profiles = [history_profile(neighbours, h) for h in histories]
    items, scores, mask = retrieve(
        model, histories, max(n_candidates, k), source, profiles=profiles
    )
    now = np.nan_to_num(last_times(log)[users], nan=0.0)
    stats = StatsIndex(log).as_of(items, now, inclusive=True)
    features = candidate_features(items, scores, mask, histories, codes, stats, now, source)
    n, c, f = features.shape
    ranked = ranker.score(features.reshape(n * c, f)).reshape(n, c)
    for row, profile in enumerate(profiles or []):
        valid = mask[row]
        ranked[row, valid] = profile_scores(ranked[row, valid], profile.affinity(items[row, valid]))
    ranked = np.where(mask, ranked, -np.inf)
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
    out = np.take_along_axis(items, order, 1)
    out[~np.take_along_axis(mask, order, 1)] = -1
    if out.shape[1] < k:
        out = np.hstack([out, np.full((n, k - out.shape[1]), -1, dtype=np.int64)])
    return out


class TwoTowerRankerRecommender:
    """The two-tower model with its ranker, as an evaluation `Recommender`.

    `fit` runs what `atlasrec train --no-dp` runs (`train_with_ranker`) on the train log
    alone; `recommend` re-ranks the candidates as of each user's last train row (`rerank`),
    for the `next` intent unless told otherwise. `for_intent` is the same fit as a
    recommender for another intent.
    """

    def __init__(
        self,
        content: np.ndarray,
        codes: np.ndarray,
        config: TwoTowerConfig | None = None,
        *,
        retrain: bool = True,
        n_candidates: int = N_CANDIDATES,
        mid_history: bool = MID_HISTORY,
    ) -> None:
        self.content, self.codes = content, codes
        self.config = config or TwoTowerConfig()
        self.retrain, self.n_candidates = retrain, n_candidates
        self.mid_history = mid_history
        self.fitted: RankedModel | None = None
        self._log: Interactions | None = None

    def for_intent(self, intent: Intent) -> IntentRecommender:
        """The same fit, ranked for `intent` (no second training)."""
        return IntentRecommender(self, intent)

    def fitted_on(self, data: Interactions) -> bool:
        """Whether the last `fit` was on `data` (the same object)."""
        return self._log is data

    def fit(self, train_data: Interactions) -> None:
        """Train the retrieval model and fit the ranker on `train_data`."""
        self.fitted = train_with_ranker(
            self.content,
            self.codes,
            train_data,
            self.config,
            retrain=self.retrain,
            n_candidates=self.n_candidates,
            mid_history=self.mid_history,
        )
        self._log = train_data

    def recommend(self, users: np.ndarray, k: int, intent: Intent = "next") -> np.ndarray:
        """Top-k unseen items per user."""
        assert self.fitted is not None and self._log is not None
        return rerank(
            self.fitted.model,
            self.fitted.ranker,
            self._log,
            self.codes,
            users,
            k,
            neighbours=self.fitted.neighbours,
            n_candidates=self.n_candidates,
            intent=intent,
        )


class IntentRecommender:
    """A `TwoTowerRankerRecommender`'s fit ranked for `intent`, as an evaluation `Recommender`.

    `fit` fits the base only where it was not fitted on that log already (an evaluation
    lists this after its base, which it then reuses).
    """

    def __init__(self, base: TwoTowerRankerRecommender, intent: Intent) -> None:
        self.base, self.intent = base, intent

    def fit(self, train_data: Interactions) -> None:
        """Fit the base on `train_data` unless it already is."""
        if not self.base.fitted_on(train_data):
            self.base.fit(train_data)

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        """Top-k unseen items per user, for this intent."""
        return self.base.recommend(users, k, intent=self.intent)
