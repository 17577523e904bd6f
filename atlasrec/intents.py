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

from typing import Literal, get_args

import numpy as np

Intent = Literal["next", "profile"]
INTENTS: tuple[Intent, ...] = get_args(Intent)

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
