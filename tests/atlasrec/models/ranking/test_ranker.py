"""The ranker: fitting on synthetic lists, leakage-free training lists, re-ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.evaluation import Interactions, temporal_leave_last_out
from atlasrec.models.cooccurrence import item_neighbours
from atlasrec.models.ranking import features
from atlasrec.models.ranking.features import (
    FEATURES,
    NO_CATEGORY,
    RECENCY_SCALE_S,
    StatsIndex,
    category_codes,
    cooccurrence_affinity,
    history_profile,
)
from atlasrec.models.ranking.fit import build_ranking_lists, ranking_cut
from atlasrec.models.ranking.pipeline import RankingPipeline
from atlasrec.models.ranking.ranker import (
    DEFAULT_RANKER,
    LinearRanker,
    RankingLists,
    fit_ranker,
    lists_ndcg,
    select_ranker,
)
from atlasrec.models.ranking.recommender import TwoTowerRankerRecommender
from atlasrec.models.ranking.retrieve import CandidateRetriever, RetrieveConfig
from atlasrec.models.recommender import user_sequences
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig

POP, REC, CAT, CO = (
    FEATURES.index("popularity"),
    FEATURES.index("recency"),
    FEATURES.index("category_affinity"),
    FEATURES.index("cooccurrence"),
)
CONFIG = TwoTowerConfig(dim=8, hidden=16, history=5, positives=2, negatives=8, epochs=2)


def synthetic_lists(
    n_lists: int = 400, n_candidates: int = 30, seed: int = 0, drop: int = 0
) -> RankingLists:
    """Lists whose positive is the candidate with the highest category affinity (+ noise)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_lists, n_candidates, len(FEATURES))).astype(np.float32)
    features[:, :, CAT] *= 3.0  # another scale than the rest: standardisation must cope
    noisy = features[:, :, CAT] + rng.normal(scale=1.0, size=(n_lists, n_candidates))
    positive = noisy.argmax(1)
    positive[:drop] = -1  # not retrieved
    mask = np.ones((n_lists, n_candidates), dtype=bool)
    return RankingLists(features, mask, positive, np.arange(n_lists))


def test_fit_ranker_recovers_the_feature_that_picks_the_positive() -> None:
    ranker = fit_ranker(synthetic_lists())
    weights = np.asarray(ranker.weights)
    assert ranker.fitted
    assert weights[CAT] > 1.0
    assert weights[CAT] > 5 * np.abs(np.delete(weights, CAT)).max()
    validation = ranker.details["validation"]
    assert validation["ndcg@10"] > validation["default_ndcg@10"] + 0.3
    assert ranker.details["users"] == 400 and ranker.details["folds"] == 5
    chosen, entry = select_ranker(ranker)
    assert chosen is ranker and entry["used"] and entry["weights"]["category_affinity"] > 1.0


def test_fit_ranker_is_deterministic_and_skips_lists_without_the_positive() -> None:
    lists = synthetic_lists(drop=100)
    first, second = fit_ranker(lists, seed=3), fit_ranker(lists, seed=3)
    assert first.weights == second.weights and first.details == second.details
    assert first.details["lists"] == 400 and first.details["lists_with_positive"] == 300
    details = first.details
    assert details["train_lists"] == 300  # positive-less lists never train
    assert details["validation"]["recall"] == 0.75  # but every list is cross-validated
    other = fit_ranker(lists, seed=4)  # other folds: another check, the same final fit
    assert other.weights == first.weights
    assert other.details["validation"] != details["validation"]
    with pytest.raises(ValueError, match="folds"):
        fit_ranker(lists, folds=1)


def test_the_check_scores_each_list_with_a_ranker_that_never_saw_it() -> None:
    """Noise lists: a ranker fitted on them wins on its own lists, not out of fold."""
    rng = np.random.default_rng(7)
    features = rng.normal(size=(60, 20, len(FEATURES))).astype(np.float32)
    positive = rng.integers(0, 20, size=60)
    lists = RankingLists(features, np.ones((60, 20), bool), positive, np.arange(60))
    ranker = fit_ranker(lists, l2=0.0)
    details = ranker.details
    assert details["train"]["ndcg@10"] > details["train"]["default_ndcg@10"]  # overfitted
    assert details["validation"]["ndcg@10"] < details["train"]["ndcg@10"] - 0.05


def test_a_ranker_that_does_not_beat_the_retrieval_order_is_not_published() -> None:
    # the positive is always the retrieval's first candidate: nothing can beat that order
    lists = synthetic_lists()
    features = lists.features.copy()
    features[:, :, 0] = -np.arange(features.shape[1], dtype=np.float32)
    lists = RankingLists(features, lists.mask, np.zeros(len(lists), np.int64), lists.users)
    candidate = fit_ranker(lists)
    assert lists_ndcg(DEFAULT_RANKER, lists) == 1.0
    chosen, entry = select_ranker(candidate)
    assert chosen is DEFAULT_RANKER and entry["fitted"] and not entry["used"]
    assert "did not beat" in entry["reason"]


def test_too_few_lists_give_the_default() -> None:
    candidate = fit_ranker(synthetic_lists(n_lists=8))
    assert not candidate.fitted and "too few" in candidate.details["reason"]
    chosen, entry = select_ranker(candidate)
    assert chosen is DEFAULT_RANKER and entry["used"] is False


def test_lists_ndcg_counts_missing_positives_as_zero() -> None:
    features = np.zeros((2, 3, len(FEATURES)), np.float32)
    features[:, :, 0] = [3.0, 2.0, 1.0]
    lists = RankingLists(features, np.ones((2, 3), bool), np.array([1, -1]), np.array([0, 1]))
    assert lists_ndcg(DEFAULT_RANKER, lists) == pytest.approx((1 / math.log2(3)) / 2)


def test_category_codes() -> None:
    codes = category_codes(["rock", None, "jazz", "rock"])
    assert codes.tolist() == [1, NO_CATEGORY, 0, 1]


def test_stats_index_counts_only_rows_before_the_time() -> None:
    log = Interactions.from_arrays(
        [0, 1, 2, 0], [0, 0, 0, 1], [10, 20, 30, 5], [1.0, 2.0, 4.0, 1.0], n_items=3
    )
    index = StatsIndex(log)
    items, at = np.array([[0, 1, 2]] * 3), np.array([20.0, 30.5, 5.0])
    strict = index.as_of(items, at, inclusive=False)
    assert strict.counts.tolist() == [[1.0, 1.0, 0.0], [7.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    np.testing.assert_array_equal(
        strict.last_seen, [[10, 5, np.nan], [30, 5, np.nan], [np.nan, np.nan, np.nan]]
    )
    inclusive = index.as_of(items, at, inclusive=True)
    assert inclusive.counts.tolist() == [[3.0, 1.0, 0.0], [7.0, 1.0, 0.0], [0.0, 1.0, 0.0]]


def _cutoff_log() -> Interactions:
    """User 0 holds out item 2 at t=1000; other users' rows straddle that time."""
    rows = [
        (0, 0, 100, 1.0),
        (0, 1, 200, 1.0),
        (0, 2, 1000, 1.0),  # user 0's held-out interaction: the cut-off
        (1, 3, 1000, 1.0),  # at the cut-off: must not count
        (1, 4, 1500, 1.0),  # user 1's held-out
        (2, 5, 50, 1.0),
        (2, 3, 2000, 1.0),  # user 2's held-out
        (3, 3, 999, 2.0),  # just before: counts (user 3 has one item, never held out)
        (4, 4, 3000, 5.0),  # after: must not count
        (4, 5, 3100, 1.0),  # user 4's held-out
        (5, 2, 1001, 7.0),  # user 0's positive, popular right after the cut-off
    ]
    u, i, t, w = zip(*rows, strict=True)
    return Interactions.from_arrays(u, i, t, w, n_users=6, n_items=7)


def test_lists_use_no_statistics_from_at_or_after_the_cut_off() -> None:
    log = _cutoff_log()
    content = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    codes = category_codes(["a", "a", "b", "b", None, "a", "b"])
    cut = ranking_cut(log, mid_history=False, validation=0)  # the counts below: no share out
    lists = build_ranking_lists(TwoTower(content, CONFIG), log, codes, n_candidates=7, cut=cut)
    assert lists.users.tolist() == [0, 1, 2, 4]
    row = 0  # user 0, cut-off t=1000, history items 0 and 1
    candidates = lists.features[row][lists.mask[row]]
    assert lists.mask[row].sum() == 5  # every item except the two of user 0's history
    # the features of each candidate, as the online store would have had them at t=1000-
    # items 2..6: counts {2: 0 (user 5 came after), 3: 2 (1000 excluded), 4: 0, 5: 1, 6: 0}
    by_pop = sorted(np.round(np.expm1(candidates[:, POP]), 4).tolist())
    assert by_pop == [0.0, 0.0, 0.0, 1.0, 2.0]
    recency = sorted(np.round(candidates[:, REC], 6).tolist())
    expected = sorted(
        [0.0, 0.0, 0.0, math.exp(-(1000 - 999) / RECENCY_SCALE_S), math.exp(-950 / 86_400 / 30)]
    )
    assert recency == pytest.approx(expected, abs=1e-6)
    positive = lists.features[row, lists.positive[row]]
    assert positive[POP] == 0.0 and positive[REC] == 0.0  # item 2 was only seen later
    assert positive[CAT] == 0.0  # category "b" is nowhere in a history of "a" items


@pytest.mark.parametrize("mid_history", [False, True])
def test_lists_match_a_brute_force_as_of_computation(mid_history: bool) -> None:
    rng = np.random.default_rng(1)
    n = 400
    log = Interactions.from_arrays(
        rng.integers(0, 30, n),
        rng.integers(0, 25, n),
        rng.integers(0, 50, n),
        rng.uniform(0.5, 2.0, n),
        n_users=30,
        n_items=25,
    )
    content = rng.normal(size=(25, 6)).astype(np.float32)
    codes = category_codes([f"c{i % 4}" for i in range(25)])
    model = TwoTower(content, CONFIG)
    lists = build_ranking_lists(model, log, codes, n_candidates=10, mid_history=mid_history)
    cut = ranking_cut(log, mid_history=mid_history)
    assert len(cut.latest) == len(temporal_leave_last_out(log).test)
    assert bool(cut.middle) == mid_history
    prefix = cut.prefix
    sequences = user_sequences(prefix)
    neighbours = item_neighbours(sequences, log.n_items)
    kinds = [(u, held, True) for u, held in sorted(cut.latest.items())]
    kinds += [(u, held, False) for u, held in sorted(cut.middle.items())]
    assert lists.users.tolist() == [u for u, _, _ in kinds]
    for row, (user, held, latest) in enumerate(kinds):
        if latest:  # as of the held-out row, strictly before it
            cutoff = log.ts[log.users == user].max()
            known = prefix.ts < cutoff
        else:  # as of the user's last prefix row, inclusive
            cutoff = prefix.ts[prefix.users == user].max()
            known = prefix.ts <= cutoff
        retriever = CandidateRetriever(RetrieveConfig(n_candidates=10))
        items, _, mask = retriever.batch(model, [sequences[user]], neighbours)
        for col, item in enumerate(items[0][mask[0]].tolist()):
            before = (prefix.items == item) & known
            count = float(prefix.weights[before].sum())
            assert lists.features[row, col, POP] == pytest.approx(math.log1p(count), rel=1e-5)
            last = prefix.ts[before].max() if before.any() else None
            recency = 0.0 if last is None else math.exp(-(cutoff - last) / RECENCY_SCALE_S)
            assert lists.features[row, col, REC] == pytest.approx(recency, rel=1e-5)
        hit = np.flatnonzero(items[0][mask[0]] == held)
        assert lists.positive[row] == (hit[0] if hit.size else -1)


@given(
    rows=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 7), st.integers(0, 20)), max_size=60),
    seed=st.integers(0, 3),
)
@settings(max_examples=100, deadline=None)
def test_the_cut_holds_out_the_latest_and_one_earlier_item_and_keeps_no_row_of_either(
    rows: list[tuple[int, int, int]], seed: int
) -> None:
    u, i, t = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [])
    log = Interactions.from_arrays(u, i, t, [1.0] * len(u), n_users=6, n_items=8)
    cut = ranking_cut(log, mid_history=True, seed=seed, validation=0)
    kept = set(zip(cut.prefix.users.tolist(), cut.prefix.items.tolist(), strict=True))
    for user in range(6):
        mine = log.users == user
        distinct = set(log.items[mine].tolist())
        if len(distinct) < 2:
            assert user not in cut.latest and user not in cut.middle
            continue
        latest, middle = cut.latest[user], cut.middle.get(user)
        last_row = max(np.flatnonzero(mine).tolist(), key=lambda r: (log.ts[r], r))
        assert latest == log.items[last_row]
        assert (user, latest) not in kept
        assert (middle is not None) == (len(distinct) >= 3)
        if middle is not None:
            assert middle in distinct and middle != latest and (user, middle) not in kept
        left = {item for v, item in kept if v == user}
        assert left == distinct - {latest, middle}


def test_a_users_own_held_out_item_never_raises_its_cooccurrence() -> None:
    """Only user 0 has items 0, 1 and 2 together, and 0 -> 2 is user 0's held-out pair."""
    log = _cutoff_log()
    content = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    codes = category_codes(["a", "a", "b", "b", None, "a", "b"])
    lists = build_ranking_lists(
        TwoTower(content, CONFIG), log, codes, n_candidates=7, mid_history=False
    )
    assert lists.users[0] == 0 and lists.positive[0] >= 0
    assert lists.features[0, lists.positive[0], CO] == 0.0
    leaky = item_neighbours(user_sequences(log), log.n_items)  # neighbours over all rows
    assert cooccurrence_affinity(leaky, [0, 1], np.array([2]))[0] > 0  # what a leak would give


def test_rerank_orders_by_the_ranker_and_never_returns_seen_items() -> None:
    log = _cutoff_log()
    content = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    codes = category_codes(["a", "a", "b", "b", None, "a", "b"])
    model = TwoTower(content, CONFIG)
    by_popularity = LinearRanker(weights=tuple(float(n == POP) for n in range(len(FEATURES))))
    out = RankingPipeline(by_popularity).batch(model, log, codes, np.array([0, 3]), 7)
    assert out.shape == (2, 7)
    assert (out[1, :6] >= 0).all() and out[1, 6] == -1  # user 3 has 6 unseen items
    assert (out[0, :4] >= 0).all() and (out[0, 4:] == -1).all()
    assert not set(out[0].tolist()) & {0, 1, 2}
    # as of user 0's last row (t=1000, inclusive): item 3 weighs 2 + 1, item 5 weighs 1
    assert out[0, :2].tolist() == [3, 5]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_profile_intent_orders_by_the_history_profile_and_never_returns_seen_items(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items, n_rows = 5, 12, 40
    log = Interactions.from_arrays(
        rng.integers(0, n_users, n_rows),
        rng.integers(0, n_items, n_rows),
        rng.integers(0, 1000, n_rows),
        n_users=n_users,
        n_items=n_items,
    )
    neighbours = item_neighbours(user_sequences(log), n_items)
    model = TwoTower(rng.normal(size=(n_items, 6)).astype(np.float32), CONFIG)
    users = np.arange(n_users)
    with pytest.MonkeyPatch.context() as patch:  # histories longer than the profile's window
        patch.setattr(features, "PROFILE_HISTORY", 2)
        out = RankingPipeline(DEFAULT_RANKER).batch(
            model,
            log,
            category_codes([None] * n_items),
            users,
            n_items,
            neighbours=neighbours,
            intent="profile",
        )
        for user, sequence in zip(users, user_sequences(log), strict=True):
            listed = out[user][out[user] >= 0]
            assert not set(listed.tolist()) & set(sequence.tolist())  # beyond the window too
            assert len(listed) == n_items - len(sequence)  # and every unseen item
            affinity = history_profile(neighbours, sequence).affinity(listed)
            strong = int((affinity > 0).sum())
            assert (affinity[:strong] > 0).all() and (np.diff(affinity[:strong]) <= 0).all()


@pytest.mark.parametrize(("mid_history", "lists"), [(False, 4), (True, 5)])
def test_two_tower_with_ranker_as_a_recommender(mid_history: bool, lists: int) -> None:
    log = _cutoff_log()
    content = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    recommender = TwoTowerRankerRecommender(
        content, category_codes(list("aabbcab")), CONFIG, n_candidates=5, mid_history=mid_history
    )
    recommender.fit(log)
    assert recommender.fitted is not None
    # 4 users with a latest item; only user 0 (items 0, 1, 2) has another one to hold out
    assert recommender.fitted.lineage["lists"] == lists
    assert recommender.fitted.lineage["mid_history_lists"] is mid_history
    assert recommender.fitted.lineage["retrieval_model"] == "retrained on all data"
    assert "too few users" in recommender.fitted.lineage["default_order"]["reason"]
    assert recommender.recommend(np.array([0, 1]), 3).shape == (2, 3)
