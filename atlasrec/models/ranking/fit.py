"""The ranker's training: leakage-free candidate lists and `train_with_ranker`.

Training lists come from a cut of a tenant's log (`ranking_cut`): each user with at least 2
distinct items has the latest one held out (`temporal_leave_last_out`) and, with
`MID_HISTORY` lists, each user with at least 2 distinct items left then has one more, drawn
at random, held out too. A two-tower model trained on the rest (the *prefix* log, which
keeps no row of any held-out pair) retrieves the top-N unseen candidates for the user's
prefix history, the item-item source adds its best `NEIGHBOUR_CANDIDATES` (`retrieve.py`), and
the features (`features.ranking_features`, the definition serving uses) of a
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from atlasrec.evaluation import Interactions, random_user_split, temporal_leave_last_out
from atlasrec.intents import DefaultOrder
from atlasrec.models.cooccurrence import head_size, item_neighbours
from atlasrec.models.ease_profile import EASE_L2, ProfileWeights, choose_l2, profile_weights
from atlasrec.models.ranking.default_order import (
    VALIDATION_FRACTION,
    Heldout,
    PrefixFit,
    choose_order,
    enough_to_validate,
    too_small,
)
from atlasrec.models.ranking.features import CandidateFeatures, StatsIndex, last_times
from atlasrec.models.ranking.pipeline import RankingConfig, RankingPipeline
from atlasrec.models.ranking.ranker import LinearRanker, RankingLists, fit_ranker, select_ranker
from atlasrec.models.ranking.retrieve import N_CANDIDATES, CandidateRetriever, RetrieveConfig
from atlasrec.models.recommender import user_sequences
from atlasrec.models.training import Progress, TrainReport, train
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig

MAX_LISTS = 50_000
"""Training lists of each kind at most (a seeded sample of users beyond that)."""

MID_HISTORY = False
"""Whether the ranker also learns from mid-history held-out items, not only the latest.

Off: on ml-latest-small such lists raised the random split's NDCG@10 by 18% and cost the
temporal split (next-item, what serving answers) 13% (docs/benchmarks.md, ranker section).
"""


@dataclass(frozen=True)
class RankingCut:
    """What the ranker's lists hold out of a log: per user, the latest item, and one more."""

    prefix: Interactions
    """The log without a row of any held-out pair: what the list model trains on."""
    latest: dict[int, int]
    """User -> their latest item (users with at least 2 distinct items)."""
    middle: dict[int, int]
    """User -> a random earlier item (users with at least 2 distinct items before the latest)."""
    validation: dict[int, np.ndarray] = field(default_factory=dict)
    """User -> a random share of their items before the latest (the profile question's
    validation items; `default_order.VALIDATION_FRACTION`)."""

    def heldout(self) -> Heldout:
        """The held-out items of each question: the latest item; it and the random share."""
        latest = {u: np.array([i], dtype=np.int64) for u, i in self.latest.items()}
        profile = {
            u: np.union1d(items, latest.get(u, items[:0])) for u, items in self.validation.items()
        }
        return Heldout(latest, profile)


def ranking_cut(
    data: Interactions,
    *,
    mid_history: bool = MID_HISTORY,
    seed: int = 0,
    validation: float = 0.0,
) -> RankingCut:
    """Hold out each user's latest item, and a random `validation` share of the rest.

    With `mid_history`, one more random earlier item too. `validation` 0 holds out no share.
    """
    latest = temporal_leave_last_out(data)
    rest, middle = latest.train, {}
    if mid_history:  # a vanishing fraction holds out exactly one item of each user with 2+
        one = random_user_split(rest, test_fraction=1e-9, seed=seed)
        rest, middle = one.train, _single(one.test)
    held: dict[int, np.ndarray] = {}
    if validation > 0:
        share = random_user_split(rest, test_fraction=validation, seed=seed)
        rest, held = share.train, dict(share.test)
    return RankingCut(rest, _single(latest.test), middle, held)


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
    retriever = CandidateRetriever(RetrieveConfig(n_candidates=n_candidates))
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
        items, scores, mask = retriever.batch(model, histories, neighbours)
        as_of = stats.as_of(items, at[users], inclusive=inclusive)
        features = CandidateFeatures().batch(
            items, scores, mask, histories, codes, as_of, at[users], neighbours
        )
        hit = (items == held[:, None]) & mask
        positive = np.where(hit.any(1), hit.argmax(1), -1)
        parts.append(RankingLists(features, mask, positive, users))
    return RankingLists.concatenate(parts)


@dataclass
class RankedModel:
    """A retrieval model with the ranker fitted for it, and how both were obtained."""

    model: TwoTower
    report: TrainReport
    ranker: LinearRanker
    lineage: dict[str, Any]
    neighbours: sp.csr_matrix | None
    """Co-occurrence neighbours over all of the training data (the ranker's feature and
    source where it weighs them)."""
    profile: ProfileWeights | None = None
    """The dense EASE head over all of the training data (the `profile` intent's pooling)."""
    order: DefaultOrder = field(default_factory=DefaultOrder)
    """The order served without an intent, chosen by validation (`default_order`)."""


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

    A model trained on the prefix of `ranking_cut` builds the ranker's lists. Another,
    trained on a cut that also holds out a random share of each history, validates the
    default order (`validate_orders`; not trained when too few users could be validated
    on). With `retrain` the returned model is then trained again on all of `data`; without,
    the prefix model is returned (it lacks each user's latest interaction). The ranker
    is `DEFAULT_RANKER` unless the fitted one beats it in cross-validation. Both trainings
    start from `init_backbone` when given. Neither has a popularity prior (that is for DP
    runs): the item-id residuals learn popularity here.
    """
    started = time.perf_counter()
    cut = ranking_cut(data, mid_history=mid_history)
    check = ranking_cut(data, validation=VALIDATION_FRACTION)  # the default order's
    validating = enough_to_validate(check.heldout())
    again = retrain and len(cut.latest) > 0  # without held-out users the prefix is all data
    phases = 1 + again + validating

    def phase(index: int) -> Progress | None:
        if progress is None:
            return None
        report_to = progress  # one bar over every training (of the same budgeted epochs)
        return lambda epoch, epochs, loss: report_to(index * epochs + epoch, phases * epochs, loss)

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
    check_model = None
    if validating:
        check_model, _ = train(
            content,
            user_sequences(check.prefix),
            config,
            init_backbone=init_backbone,
            progress=phase(1),
        )
    order, entry["default_order"] = validate_orders(check_model, ranker, check, codes, n_candidates)
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
            progress=phase(phases - 1),
        )
    else:
        model, report = prefix_model, prefix_report
    neighbours = item_neighbours(sequences, data.n_items)
    l2 = float(entry["default_order"].get("profile_l2", EASE_L2))
    profile = profile_weights(sequences, data.n_items, l2=l2)
    entry["profile_head_items"] = len(profile.head)
    entry["total_seconds"] = round(time.perf_counter() - started, 2)
    return RankedModel(model, report, ranker, entry, neighbours, profile, order)


def validate_orders(
    model: TwoTower | None,
    ranker: LinearRanker,
    cut: RankingCut,
    codes: np.ndarray,
    n_candidates: int,
) -> tuple[DefaultOrder, dict[str, Any]]:
    """The default order, chosen on the cut's held-out items (`default_order.choose_order`).

    `model` was trained on the cut's prefix alone (None: too few users to validate on); the
    ranker is the tenant's. The profile's ridge penalty is chosen first, on the profile
    question alone (`choose_l2`).
    """
    if model is None:
        return DefaultOrder("next"), too_small(cut.heldout())
    sequences = user_sequences(cut.prefix)
    n_items = cut.prefix.n_items
    heldout = cut.heldout()
    l2, l2_scores = choose_l2(sequences, heldout.profile, n_items)
    fit = PrefixFit(
        model,
        cut.prefix,
        codes,
        item_neighbours(sequences, n_items),
        profile_weights(sequences, n_items, l2=l2),
    )
    pipeline = RankingPipeline(ranker, RankingConfig(RetrieveConfig(n_candidates=n_candidates)))
    order, entry = choose_order(pipeline, fit, heldout)
    return order, {**entry, "profile_l2": l2, "profile_l2_ndcg_at_10": l2_scores}
