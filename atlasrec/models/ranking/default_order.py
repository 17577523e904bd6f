"""Choosing a model version's default order by validation on both questions, with a floor.

A request without an intent does not say which question it asks: the next item (what the
temporal leave-last-out split measures) or more for the whole profile (the random split).
Training holds out, before anything is fitted on them, each user's latest item and a random
`VALIDATION_FRACTION` of the rest (`fit.ranking_cut`); the prefix model and its ranker then
rank both held-out sets, in every candidate order:

- `next` (the ranker), `profile` (the dense EASE head's pooling) and their `blend` at each
  weight of `BLEND_WEIGHTS` (`atlasrec.intents.blend_scores`);
- the baselines fitted on the same prefix: popularity and EASE.

The default is the blend whose worse ratio to the question's best baseline is highest (the
targets are ratios to the best baseline of each question). **The floor**: an order that
scores below popularity on a question's validation data is never served for it; a default
below popularity on either question is popularity itself. Validation needs
`MIN_VALIDATION_USERS` users per question: a tenant with fewer gets the `next` order (its
model's, the backbone's cold start where it has one) and its lineage says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from atlasrec.evaluation import EASE, EASEConfig, Interactions, PopScorer, ndcg_at_k
from atlasrec.intents import DefaultOrder, Order
from atlasrec.models.ease_profile import ProfileWeights
from atlasrec.models.ranking.pipeline import RankingPipeline, ScoredLists
from atlasrec.models.two_tower import TwoTower

BLEND_WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))
"""The `next` weights tried (0: the profile order, 1: the next order)."""

VALIDATION_FRACTION = 0.25
"""Of each user's items before the latest, the share held out for the profile question."""

MIN_VALIDATION_USERS = 20
"""Users a question needs to be validated on (fewer: no choice is made from them)."""

K = 10
QUESTIONS = ("next", "profile")


@dataclass(frozen=True)
class Heldout:
    """Per question, user -> the items held out of the prefix log for it."""

    next: dict[int, np.ndarray]
    profile: dict[int, np.ndarray]

    def of(self, question: str) -> dict[int, np.ndarray]:
        """The held-out items for `question`."""
        return self.next if question == "next" else self.profile


@dataclass(frozen=True)
class PrefixFit:
    """What was fitted on the prefix log: the retrieval model, neighbours and EASE head."""

    model: TwoTower
    log: Interactions
    codes: np.ndarray
    neighbours: sp.csr_matrix | None
    profile: ProfileWeights | None


def choose_order(
    pipeline: RankingPipeline, fit: PrefixFit, heldout: Heldout
) -> tuple[DefaultOrder, dict[str, Any]]:
    """The default order and the lineage entry recording every candidate's validation score."""
    sizes = {q: len(heldout.of(q)) for q in QUESTIONS}
    if not enough_to_validate(heldout):
        return DefaultOrder("next"), too_small(heldout)
    scores = {q: _scores(pipeline, fit, heldout.of(q)) for q in QUESTIONS}
    order, entry = pick(scores)
    return order, {**entry, "users": sizes}


def enough_to_validate(heldout: Heldout) -> bool:
    """Whether both questions have `MIN_VALIDATION_USERS` held-out users."""
    return min(len(heldout.of(q)) for q in QUESTIONS) >= MIN_VALIDATION_USERS


def too_small(heldout: Heldout) -> dict[str, Any]:
    """The lineage entry of a tenant too small to validate on (it gets the `next` order)."""
    sizes = {q: len(heldout.of(q)) for q in QUESTIONS}
    reason = (
        f"too few users to validate on ({sizes['next']} next-item, {sizes['profile']} "
        f"profile; at least {MIN_VALIDATION_USERS} each): the next order, not validated"
    )
    return {"chosen": "next", "weight": 1.0, "reason": reason, "users": sizes}


def pick(scores: dict[str, dict[str, float]]) -> tuple[DefaultOrder, dict[str, Any]]:
    """The default order from each question's validation scores (see the module docstring).

    `scores[question]` holds NDCG@10 of `next`, `profile`, each `blend_<w>`, `popularity`
    and, where it fitted, `ease`.
    """
    best = {q: max(scores[q]["popularity"], scores[q].get("ease", 0.0)) for q in QUESTIONS}
    blends = [f"blend_{w:.1f}" for w in BLEND_WEIGHTS]
    worst = {
        name: min(scores[q][name] / best[q] if best[q] > 0 else 1.0 for q in QUESTIONS)
        for name in blends
    }
    chosen = max(blends, key=lambda name: worst[name])  # ties: the first (more profile)
    order = DefaultOrder("blend", float(chosen.removeprefix("blend_")))
    reason = (
        f"blend weight {order.weight:g}: the highest worse-question ratio to the best "
        f"baseline ({worst[chosen]:.3f})"
    )
    floored = [q for q in QUESTIONS if scores[q][chosen] < scores[q]["popularity"]]
    if floored:
        order = DefaultOrder("popularity")
        reason = f"the floor: the best blend scored below popularity on {', '.join(floored)}"
    # an intent's own question: `next` asks the next item, `profile` the whole profile
    below = tuple(q for q in QUESTIONS if scores[q][q] < scores[q]["popularity"])
    order = DefaultOrder(order.order, order.weight, below)
    entry = {
        "chosen": order.order,
        "weight": order.weight,
        "reason": reason,
        "below_popularity": list(below),  # intents served popularity instead
        "ndcg_at_10": {q: {n: round(v, 5) for n, v in scores[q].items()} for q in QUESTIONS},
    }
    return order, entry


def _scores(
    pipeline: RankingPipeline, fit: PrefixFit, heldout: dict[int, np.ndarray]
) -> dict[str, float]:
    """NDCG@10 of every candidate order and baseline on one question's held-out items."""
    users = np.array(sorted(heldout), dtype=np.int64)
    truth = [heldout[int(u)] for u in users]
    lists: ScoredLists = pipeline.scored(
        fit.model,
        fit.log,
        fit.codes,
        users,
        K,
        neighbours=fit.neighbours,
        profile=fit.profile,
        with_profile=True,
    )
    out: dict[str, float] = {}
    for order in (DefaultOrder("next"), DefaultOrder("profile")):
        out[order.order] = _ndcg(lists.top_k(order, K), truth)
    for weight in BLEND_WEIGHTS:
        out[f"blend_{weight:.1f}"] = _ndcg(lists.top_k(DefaultOrder("blend", weight), K), truth)
    baselines: dict[str, PopScorer | EASE] = {"popularity": PopScorer()}
    if fit.log.n_items <= EASEConfig().max_items:
        baselines["ease"] = EASE()
    for name, baseline in baselines.items():
        baseline.fit(fit.log)
        out[name] = _ndcg(baseline.recommend(users, K), truth)
    return out


def _ndcg(ranked: np.ndarray, truth: list[np.ndarray]) -> float:
    return float(ndcg_at_k(ranked, truth, K).mean())


def served_order(order: DefaultOrder, intent: Order | None) -> Order:
    """What a request is served: its intent's order, or the default; popularity below the floor."""
    if intent is None:
        return order.order
    return "popularity" if intent in order.below_popularity else intent
