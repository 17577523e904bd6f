"""Team-draft interleaving of two rankers, and its anytime-valid sequential test.

**Team draft** (Radlinski, Kurup and Joachims, CIKM 2008): the two rankers pick in turns
like captains choosing teams; in each round a coin flip says who picks first, and each picks
its highest-ranked item not yet in the list. The list's items are credited to the team that
picked them, so a click is a vote for one ranker, on the same user, list and moment: the
between-user variance that an A/B test has to average away is not there.

**The test.** A request whose clicks favour one team is a win for it; ties (no clicks, or
as many on both) carry no information. If the rankers are equally good, every decisive
request is a fair coin: the team draft's coin flips make each position equally likely to be
either team's. The test is the sequential sign test by a beta mixture of likelihood ratios
(Robbins, 1970): with `w` wins for B out of `n` decisive requests,

    M_n = B(a + w, a + n - w) / B(a, a) / 0.5 ** n

is a nonnegative martingale under the null, so by Ville's inequality the chance that it
*ever* reaches `1 / alpha` is at most `alpha`: the test may be looked at after every request
(an exact guarantee, not an asymptotic one). When it does, the ranker with more wins is the
better one. The fixed-sample two-sided binomial test (scipy) is reported beside it, for
reference only: it is not valid under repeated looks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from scipy import special, stats

ALPHA = 0.05
PRIOR = 1.0
"""The mixture's Beta(a, a) prior on the win rate (uniform)."""


def team_draft(
    a: Sequence[str], b: Sequence[str], k: int, rng: random.Random
) -> tuple[list[str], str]:
    """The interleaved top-`k` of rankings `a` and `b`, and each position's team (`A`/`B`).

    The team with fewer picks picks next; on a tie a coin flip decides. A team whose ranking
    is used up leaves the rest of the list to the other.
    """
    rankings = {"A": a, "B": b}
    at = {"A": 0, "B": 0}
    picks = {"A": 0, "B": 0}
    items: list[str] = []
    teams: list[str] = []
    taken: set[str] = set()

    def next_of(team: str) -> str | None:
        ranking = rankings[team]
        while at[team] < len(ranking) and ranking[at[team]] in taken:
            at[team] += 1
        return ranking[at[team]] if at[team] < len(ranking) else None

    while len(items) < k:
        if picks["A"] == picks["B"]:
            first = "A" if rng.random() < 0.5 else "B"
        else:
            first = "A" if picks["A"] < picks["B"] else "B"
        other = "B" if first == "A" else "A"
        team = first if next_of(first) is not None else other
        item = next_of(team)
        if item is None:
            break  # both rankings are used up
        items.append(item)
        teams.append(team)
        taken.add(item)
        picks[team] += 1
    return items, "".join(teams)


def credit(teams: str, clicked: Collection[int]) -> int:
    """A request's vote: +1 if B's items got more clicks, -1 if A's did, 0 for a tie."""
    b = sum(1 for p in clicked if 0 <= p < len(teams) and teams[p] == "B")
    a = sum(1 for p in clicked if 0 <= p < len(teams) and teams[p] == "A")
    return (b > a) - (a > b)


@dataclass(frozen=True)
class SignTest:
    """The sequential sign test's state after the decisive requests seen so far."""

    wins_a: int
    wins_b: int
    log_evidence: float
    """log M_n: the test rejects the null when it reaches log(1 / alpha)."""
    alpha: float

    @property
    def decided(self) -> bool:
        """Whether the evidence reached the threshold (at any look, valid at `alpha`)."""
        return self.log_evidence >= math.log(1 / self.alpha)

    @property
    def winner(self) -> str | None:
        """`A` or `B` once decided; None before."""
        if not self.decided or self.wins_a == self.wins_b:
            return None
        return "B" if self.wins_b > self.wins_a else "A"

    @property
    def fixed_p_value(self) -> float:
        """The two-sided binomial test's p-value (one look only; reported for reference)."""
        n = self.wins_a + self.wins_b
        return float(stats.binomtest(self.wins_b, n).pvalue) if n else 1.0


def sign_test(wins_a: int, wins_b: int, alpha: float = ALPHA, prior: float = PRIOR) -> SignTest:
    """The beta-mixture sequential sign test after `wins_a` and `wins_b` decisive requests."""
    n = wins_a + wins_b
    log_m = (
        special.betaln(prior + wins_b, prior + wins_a)
        - special.betaln(prior, prior)
        + n * math.log(2)
    )
    return SignTest(wins_a, wins_b, float(log_m), alpha)


def first_decision(votes: Sequence[int], alpha: float = ALPHA) -> tuple[int, str] | None:
    """The 1-based request at which the test first decides over `votes`, and the winner."""
    wins_a = wins_b = 0
    for n, vote in enumerate(votes, start=1):
        wins_a += vote < 0
        wins_b += vote > 0
        if vote and (test := sign_test(wins_a, wins_b, alpha)).decided and test.winner:
            return n, test.winner
    return None
