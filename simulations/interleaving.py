"""Team-draft interleavings of two synthetic rankers under position-biased clicks.

The statistical side of an interleaving experiment without a server: 30 items with
attractiveness drawn uniformly from [0, 0.3]; clicks by the position-based model (position
`p` examined with probability `1 / (p + 1)`). Ranker A orders the items at random, afresh
for every request; ranker B does the same (an A/A pair: equally good, different lists) or
orders them by attractiveness (a better ranker). Each request's vote is
`atlasrec.evaluation.interleaving.credit`.
"""

from __future__ import annotations

import random

import numpy as np

from atlasrec.evaluation.interleaving import credit, team_draft

ITEMS = 30
K = 10


def team_draft_votes(rng: np.random.Generator, requests: int, *, better_b: bool) -> list[int]:
    """The votes of `requests` interleaved lists (+1 for B, -1 for A, 0 for a tie)."""
    attract = rng.uniform(0.0, 0.3, ITEMS)
    coin = random.Random(int(rng.integers(2**32)))
    examined = 1 / np.arange(1, K + 1)
    votes = []
    for _ in range(requests):
        a = [str(i) for i in rng.permutation(ITEMS)]
        order = np.argsort(-attract) if better_b else rng.permutation(ITEMS)
        items, teams = team_draft(a, [str(i) for i in order], K, coin)
        p = examined[: len(items)] * attract[[int(i) for i in items]]
        clicked = set(np.flatnonzero(rng.random(len(items)) < p).tolist())
        votes.append(credit(teams, clicked))
    return votes
