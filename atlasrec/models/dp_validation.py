"""The floor of a DP run: its default order chosen by a DP release of validation scores.

A DP run cannot read its users' data outside its guarantee, so the validation that picks a
non-DP model's default order (`ranking.default_order`) is a mechanism of the run too:

- the run's releases are fitted on `validation_cut`: each user's latest item and one random
  earlier item held out (users with 2 or more distinct items);
- each validated user gains, for each order the run can serve (`next`: the DP two-tower
  model; `profile`: DP-EASE), the NDCG@10 of that order minus the NDCG@10 of popularity by
  the run's released counts, averaged over the user's held-out questions: a value in
  [-1, 1] per order;
- the sum of the gains is released with Gaussian noise (`validation_mechanism`, charged
  with the run at `VALIDATION_SHARE` of its epsilon on its own; the L2 sensitivity of one
  user's gain vector is the square root of the number of orders);
- the default is DP-EASE's `profile` order (else `next`), the order measured above the DP
  two-tower model on both questions at 610 users, while its noisy sum is above 0, else
  popularity (the floor); `next` replaces either only where its noisy sum exceeds theirs (0
  for popularity) by more than `SWITCH_Z` standard deviations of the difference's noise,
  so a switch is the data's, not the noise's; an intent whose noisy sum is below 0 is served
  popularity.

Choosing the higher of the two noisy sums, without the margin, was measured and not kept:
at 610 users (ml-latest-small, epsilon 8) the noise of the mean gain (0.0115) is as large
as the gap between the two, and it picked `next` in 2 of 3 seeds, lowering the temporal
split's median NDCG@10 from 0.0253 to 0.0202. Never choosing `next` was measured too: on a
1,000-user synthetic tenant its noisy mean gain was 0.046-0.060 (7-8 standard deviations)
while `profile`'s was below 0, and the run served popularity (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from atlasrec.errors import InvalidInputError
from atlasrec.evaluation import Interactions, PopScorer, ndcg_at_k
from atlasrec.intents import DefaultOrder, Order
from atlasrec.models.ease_profile import ProfileWeights
from atlasrec.models.ranking.fit import RankingCut, ranking_cut
from atlasrec.models.ranking.pipeline import RankingPipeline
from atlasrec.models.ranking.ranker import model_ranker
from atlasrec.models.two_tower import TwoTower
from privacy.accounting import Mechanism, calibrate_noise
from privacy.secure_mode import normal as secure_normal

VALIDATION_SHARE = 0.1
"""Of the run's epsilon, what the validation release spends on its own."""

K = 10


def validation_mechanism(epsilon: float, delta: float) -> Mechanism | None:
    """The Gaussian release of the validation sums (None: the share buys no release)."""
    try:
        return Mechanism(calibrate_noise(VALIDATION_SHARE * epsilon, delta, 1.0, 1), 1.0, 1)
    except InvalidInputError:
        return None


def validation_cut(data: Interactions) -> RankingCut:
    """The log the run's releases are fitted on, and the items held out of it."""
    return ranking_cut(data, mid_history=True)


def user_gains(
    model: TwoTower,
    profile: ProfileWeights | None,
    counts: np.ndarray,
    cut: RankingCut,
    codes: np.ndarray,
) -> dict[Order, np.ndarray]:
    """Per validated user, each order's NDCG@10 gain over popularity (see the module doc)."""
    users = np.array(sorted(set(cut.latest) | set(cut.middle)), dtype=np.int64)
    lists = RankingPipeline(model_ranker(model)).scored(
        model, cut.prefix, codes, users, K, profile=profile, with_profile=profile is not None
    )
    popular = popularity_top_k(counts, cut.prefix, users, K)
    asked = np.zeros(len(users))
    questions = []  # per question: its users' rows, held-out items and popularity's NDCG
    for held in (cut.latest, cut.middle):
        rows = np.flatnonzero(np.isin(users, list(held)))
        truth = [np.array([held[int(u)]]) for u in users[rows]]
        questions.append((rows, truth, ndcg_at_k(popular[rows], truth, K)))
        asked[rows] += 1
    orders: list[Order] = ["next", "profile"] if profile is not None else ["next"]
    gains: dict[Order, np.ndarray] = {}
    for order in orders:
        ranked = lists.top_k(DefaultOrder(order), K)
        total = np.zeros(len(users))
        for rows, truth, baseline in questions:
            total[rows] += ndcg_at_k(ranked[rows], truth, K) - baseline
        gains[order] = total / np.maximum(asked, 1)
    return gains


class _CountScorer(PopScorer):
    """Popularity by given counts (a DP release) instead of the log's."""

    def __init__(self, counts: np.ndarray) -> None:
        super().__init__()
        self.counts = counts

    def _fit(self, train: Interactions, x: sp.csr_matrix) -> None:
        self._pop = self.counts.astype(np.float64)


def popularity_top_k(
    counts: np.ndarray, log: Interactions, users: np.ndarray, k: int
) -> np.ndarray:
    """Each user's `k` most counted items not in their history (ties: lower index first)."""
    scorer = _CountScorer(counts)
    scorer.fit(log)
    return scorer.recommend(users, k)


SWITCH_Z = 2.0
"""Standard deviations of noise by which `next`'s noisy gain must lead to be the default."""


def release_choice(
    gains: dict[Order, np.ndarray], mechanism: Mechanism, *, secure: bool = False
) -> tuple[DefaultOrder, dict[str, Any]]:
    """The default order from the noisy gain sums, and its lineage entry."""
    names = sorted(gains)
    users = len(gains[names[0]])
    scale = mechanism.noise_multiplier * math.sqrt(len(names))
    noise = (
        secure_normal(len(names), scale)
        if secure
        else np.random.default_rng().normal(0.0, scale, len(names))
    )  # OS entropy, no seed
    noisy = {n: float(gains[n].sum() + e) for n, e in zip(names, noise, strict=True)}
    default: Order = "profile" if "profile" in noisy else "next"
    below = tuple(n for n in names if noisy[n] < 0)
    margin = SWITCH_Z * math.sqrt(2.0) * scale  # the noise of a difference of two sums
    if (
        default == "profile"
        and "next" in noisy
        and noisy["next"] - max(noisy[default], 0.0) > margin
    ):
        order = DefaultOrder("next", 1.0, below)
        rival = "profile" if noisy[default] > 0 else "popularity"
        reason = f"DP validation: next's noisy gain leads {rival}'s by more than {SWITCH_Z:g} sd"
    elif noisy[default] > 0:
        order = DefaultOrder(default, 1.0, below)
        reason = f"DP validation: {default}'s noisy gain over popularity is above 0"
    else:
        order = DefaultOrder("popularity", 1.0, below)
        reason = f"the floor: {default}'s noisy validation gain over popularity is not above 0"
    mean = {n: round(v / max(users, 1), 5) for n, v in noisy.items()}
    entry = {
        "chosen": order.order,
        "weight": order.weight,
        "reason": reason,
        "below_popularity": list(below),
        "dp_validation": {
            "users": users,
            "noisy_mean_ndcg_gain_over_popularity": mean,
            "noise_std_of_the_mean": round(scale / max(users, 1), 5),
            "next_margin_of_the_mean": round(margin / max(users, 1), 5),
            "epsilon_share": VALIDATION_SHARE,
        },
    }
    return order, entry
