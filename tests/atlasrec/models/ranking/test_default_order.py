"""The default order: a validation cut for both questions, the choice, and the floor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.evaluation import Interactions
from atlasrec.intents import DefaultOrder
from atlasrec.models.cooccurrence import item_neighbours
from atlasrec.models.ease_profile import profile_weights
from atlasrec.models.ranking import fit
from atlasrec.models.ranking.default_order import (
    BLEND_WEIGHTS,
    MIN_VALIDATION_USERS,
    VALIDATION_FRACTION,
    PrefixFit,
    choose_order,
    pick,
    served_order,
)
from atlasrec.models.ranking.features import category_codes
from atlasrec.models.ranking.fit import ranking_cut
from atlasrec.models.ranking.pipeline import RankingPipeline
from atlasrec.models.ranking.ranker import DEFAULT_RANKER
from atlasrec.models.recommender import user_sequences
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig


def scores(next_by_weight: list[float], profile_by_weight: list[float], **base: float) -> dict:
    """Validation scores with the given blend curves (index: `BLEND_WEIGHTS`)."""
    out: dict[str, dict[str, float]] = {}
    for question, curve in (("next", next_by_weight), ("profile", profile_by_weight)):
        row = {f"blend_{w:.1f}": v for w, v in zip(BLEND_WEIGHTS, curve, strict=True)}
        row["next"], row["profile"] = curve[-1], curve[0]
        row["popularity"] = base.get(f"{question}_popularity", 0.01)
        row["ease"] = base.get(f"{question}_ease", 0.02)
        out[question] = row
    return out


def test_the_blend_with_the_highest_worse_question_ratio_is_chosen() -> None:
    rising = [0.02 + 0.003 * n for n in range(11)]  # next: better with more `next` weight
    falling = [0.40 - 0.02 * n for n in range(11)]  # profile: worse with more `next` weight
    order, entry = pick(scores(rising, falling, profile_ease=0.36))
    # ratios to the best baseline: next 0.02+0.003n / 0.02, profile 0.40-0.02n / 0.36
    expected = max(
        range(11), key=lambda n: min((0.02 + 0.003 * n) / 0.02, (0.40 - 0.02 * n) / 0.36)
    )
    assert order == DefaultOrder("blend", BLEND_WEIGHTS[expected]) and entry["chosen"] == "blend"
    assert entry["ndcg_at_10"]["profile"]["ease"] == 0.36 and "worse-question" in entry["reason"]


def test_the_floor_serves_popularity_when_the_best_blend_is_below_it() -> None:
    flat = [0.005] * 11
    order, entry = pick(scores(flat, [0.3] * 11, next_popularity=0.01))
    assert order.order == "popularity" and "floor" in entry["reason"]
    assert order.below_popularity == ("next",)  # the next intent is below popularity too
    assert served_order(order, "next") == "popularity"
    assert served_order(order, "profile") == "profile"
    assert served_order(order, None) == "popularity"


def test_an_order_above_popularity_everywhere_is_served_as_asked() -> None:
    order, _ = pick(scores([0.05] * 11, [0.3] * 11))
    assert order.below_popularity == () and order.order == "blend"
    assert [served_order(order, i) for i in ("next", "profile", None)] == [
        "next",
        "profile",
        "blend",
    ]


@given(
    rows=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9), st.integers(0, 50)), max_size=80),
    seed=st.integers(0, 3),
)
@settings(max_examples=100, deadline=None)
def test_the_validation_cut_keeps_no_held_out_pair_in_the_prefix(
    rows: list[tuple[int, int, int]], seed: int
) -> None:
    u, i, t = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [])
    log = Interactions.from_arrays(u, i, t, n_users=6, n_items=10)
    cut = ranking_cut(log, seed=seed, validation=VALIDATION_FRACTION)
    kept = set(zip(cut.prefix.users.tolist(), cut.prefix.items.tolist(), strict=True))
    heldout = cut.heldout()
    for user, items in heldout.profile.items():
        assert user in cut.latest and cut.latest[user] in items.tolist()  # the latest too
        assert not {(user, item) for item in items.tolist()} & kept
        distinct = set(log.items[log.users == user].tolist())
        assert set(items.tolist()) < distinct  # never the whole history
    for user, items in heldout.next.items():
        assert items.tolist() == [cut.latest[user]] and (user, cut.latest[user]) not in kept


def _fit(n_users: int) -> tuple[RankingPipeline, PrefixFit, object]:
    rng = np.random.default_rng(0)
    n_items = 30
    users = np.repeat(np.arange(n_users), 8)
    items = np.concatenate([rng.choice(n_items, 8, replace=False) for _ in range(n_users)])
    log = Interactions.from_arrays(
        users, items, np.arange(len(users)), n_users=n_users, n_items=n_items
    )
    cut = ranking_cut(log, validation=VALIDATION_FRACTION)
    sequences = user_sequences(cut.prefix)
    config = TwoTowerConfig(dim=8, hidden=16, history=5, positives=2, negatives=8, epochs=1)
    model = TwoTower(rng.normal(size=(n_items, 6)).astype(np.float32), config)
    fit = PrefixFit(
        model,
        cut.prefix,
        category_codes([None] * n_items),
        item_neighbours(sequences, n_items),
        profile_weights(sequences, n_items),
    )
    return RankingPipeline(DEFAULT_RANKER), fit, cut.heldout()


def test_choose_order_scores_every_candidate_on_both_questions() -> None:
    pipeline, fit, heldout = _fit(MIN_VALIDATION_USERS + 5)
    order, entry = choose_order(pipeline, fit, heldout)  # type: ignore[arg-type]
    assert entry["users"] == {"next": MIN_VALIDATION_USERS + 5, "profile": MIN_VALIDATION_USERS + 5}
    for question in ("next", "profile"):
        names = set(entry["ndcg_at_10"][question])
        assert {"next", "profile", "popularity", "ease"} <= names
        assert {f"blend_{w:.1f}" for w in BLEND_WEIGHTS} <= names
    assert order.order in ("blend", "popularity")


def test_a_tenant_too_small_to_validate_gets_the_next_order_and_the_reason() -> None:
    pipeline, fit, heldout = _fit(MIN_VALIDATION_USERS - 1)
    order, entry = choose_order(pipeline, fit, heldout)  # type: ignore[arg-type]
    assert order == DefaultOrder("next") and "too few users" in entry["reason"]
    assert "ndcg_at_10" not in entry


def test_the_order_is_validated_by_a_model_that_never_saw_the_held_out_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = MIN_VALIDATION_USERS + 10, 30
    users = np.repeat(np.arange(n_users), 8)
    items = np.concatenate([rng.choice(n_items, 8, replace=False) for _ in range(n_users)])
    log = Interactions.from_arrays(
        users, items, np.arange(len(users)), n_users=n_users, n_items=n_items
    )
    trained: list[list[np.ndarray]] = []
    real_train = fit.train

    def recording(content, sequences, config, **kwargs):  # type: ignore[no-untyped-def]
        trained.append([np.array(s) for s in sequences])
        return real_train(content, sequences, config, **kwargs)

    monkeypatch.setattr(fit, "train", recording)
    config = TwoTowerConfig(dim=8, hidden=16, history=5, positives=2, negatives=8, epochs=1)
    content = rng.normal(size=(n_items, 6)).astype(np.float32)
    ranked = fit.train_with_ranker(content, category_codes([None] * n_items), log, config)
    assert len(trained) == 3  # the lists' prefix, the validation model, all data
    check = ranking_cut(log, validation=VALIDATION_FRACTION).heldout()
    for user, held in check.profile.items():
        assert not set(held.tolist()) & set(trained[1][user].tolist())
    assert ranked.lineage["default_order"]["users"]["profile"] == len(check.profile)
    assert ranked.order.order in ("blend", "popularity")
    assert ranked.profile is not None and ranked.lineage["profile_head_items"] > 0
