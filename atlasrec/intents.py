"""What a recommendation request asks: the next item, or more for the user's whole profile.

- `next` (the default): what the user is likely to interact with next, from their recent
  history: the tenant's ranker over the retrieval candidates (it is fitted on each user's
  latest interaction).
- `profile`: items that go with everything the user has (a "for you" shelf, a catalog
  completion): the candidates with a positive `history_profile` affinity (the item-item
  neighbours pooled over the latest `PROFILE_HISTORY` items, unweighted), strongest first,
  then the rest in the `next` order. A history without neighbours (a model version without
  them, as DP ones are; items outside the neighbours' head) gets the `next` order.

The two differ because the questions do: on ml-latest-small the ranker fitted for the next
item scores 0.60x EASE on a random 75/25 split, ranking by the history profile 0.90x, and
rankers fitted for the random split's question on these features scored below the profile
alone (docs/benchmarks.md). Offline evaluation and serving both order by `profile_scores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

Intent = Literal["next", "profile"]
INTENTS: tuple[Intent, ...] = get_args(Intent)

Order = Literal["next", "profile", "blend", "popularity"]
"""The order a response was served in: an intent's, the default `blend` of both (a request
without an intent), or `popularity` where the model's own orders fell below it (the floor)."""
ORDERS: tuple[Order, ...] = get_args(Order)


@dataclass(frozen=True)
class DefaultOrder:
    """The order a model version serves a request without an intent (chosen by validation).

    `weight` is the blend's weight of the `next` order (`blend_scores`); the other orders
    ignore it.
    """

    order: Order = "next"
    weight: float = 1.0
    below_popularity: tuple[str, ...] = ()
    """Intents whose own order scored below popularity on validation: served popularity."""


BLEND_DEPTH = 20.0
"""The blend's rank offset: a rank-`r` item of an order adds weight / (BLEND_DEPTH + r)."""

PROFILE_CANDIDATES = 100
"""Candidates the `profile` intent adds from the history profile (its best, beyond the others)."""


def profile_scores(ranked: np.ndarray, affinity: np.ndarray) -> np.ndarray:
    """Scores that order candidates by `affinity` where it is positive, then by `ranked`.

    `ranked` are the `next` intent's scores, `affinity` the candidates' `history_profile`
    affinities. Scores are places, evenly spaced: the candidates with a positive affinity in
    (1, 2], strongest first, the others in (-2, -1], in the `ranked` order (both stable), so
    the re-ranking stage sees one spread whatever the affinities' scale.
    """
    ranked = np.asarray(ranked, dtype=np.float64)
    affinity = np.asarray(affinity, dtype=np.float64)
    if ranked.shape != affinity.shape:
        raise ValueError("profile scores: ranked and affinity differ in shape")
    positive = affinity > 0
    if not positive.any():
        return ranked
    out = np.empty_like(ranked)
    for group, key, top in ((positive, affinity, 2.0), (~positive, ranked, -1.0)):
        members = np.flatnonzero(group)
        place = np.argsort(-key[members], kind="stable")
        out[members[place]] = top - np.arange(len(members)) / max(len(members), 1)
    return out


def blend_scores(ranked: np.ndarray, affinity: np.ndarray, weight: float) -> np.ndarray:
    """The default order: the `next` and `profile` orders fused by their ranks.

    Reciprocal-rank fusion (Cormack et al., SIGIR 2009), weighted: a candidate scores
    `weight / (BLEND_DEPTH + r_next) + (1 - weight) / (BLEND_DEPTH + r_profile)`, with `r`
    its 0-based rank in each order; a candidate without a positive `affinity` has no
    `profile` rank and adds nothing from it. Ranks, not scores, so neither order's scale
    matters. `weight` 1 gives the `next` order, 0 the `profile` order (then `next`).
    """
    ranked = np.asarray(ranked, dtype=np.float64)
    affinity = np.asarray(affinity, dtype=np.float64)
    if ranked.shape != affinity.shape:
        raise ValueError("blend scores: ranked and affinity differ in shape")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend weight must lie in [0, 1], got {weight}")
    n = len(ranked)
    rank = np.empty(n)
    rank[np.argsort(-ranked, kind="stable")] = np.arange(n)
    positive = np.flatnonzero(affinity > 0)
    place = positive[np.argsort(-affinity[positive], kind="stable")]
    out = weight / (BLEND_DEPTH + rank)
    out[place] += (1.0 - weight) / (BLEND_DEPTH + np.arange(len(place)))
    # far below any gap between two fused scores: ties keep the `next` order
    return out + 1e-12 * (n - rank)
