"""Baselines and the runner: contracts, hand-built cases, synthetic structure, MovieLens."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest

from atlasrec.datasets import MOVIELENS_DIR
from atlasrec.errors import InvalidInputError
from atlasrec.evaluation import (
    ALS,
    EASE,
    ALSConfig,
    EASEConfig,
    Interactions,
    NotFittedError,
    PopScorer,
    Recommender,
    Split,
    evaluate,
    random_user_split,
    temporal_leave_last_out,
    top_k,
)

FAST_ALS = ALSConfig(factors=16, iterations=10)


class RandomRecommender:
    """Uniformly random unseen items: the floor every real model must beat."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.seen: list[set[int]] = []
        self.n_items = 0

    def fit(self, train: Interactions) -> None:
        self.n_items = train.n_items
        self.seen = [set() for _ in range(train.n_users)]
        for u, i in zip(train.users.tolist(), train.items.tolist(), strict=True):
            self.seen[u].add(i)

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        out = np.full((len(users), k), -1, dtype=np.int64)
        for row, u in enumerate(users.tolist()):
            items = [i for i in rng.permutation(self.n_items).tolist() if i not in self.seen[u]]
            out[row, : min(k, len(items))] = items[:k]
        return out


class FixedRecommender:
    """Returns preset lists (for exact runner checks)."""

    def __init__(self, lists: dict[int, list[int]]) -> None:
        self.lists = lists
        self.fitted = False

    def fit(self, train: Interactions) -> None:
        self.fitted = True

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        return np.array([self.lists[int(u)][:k] for u in users], dtype=np.int64)


def random_log(n_users: int, n_items: int, n: int, seed: int) -> Interactions:
    rng = np.random.default_rng(seed)
    return Interactions.from_arrays(
        rng.integers(0, n_users, n),
        rng.integers(0, n_items, n),
        rng.integers(0, 1000, n),
        n_users=n_users,
        n_items=n_items,
    )


def block_log(seed: int = 0) -> Interactions:
    """Group A (users 0-59) likes items 0-19, group B (users 60-239) likes items 20-39.

    Group B is three times larger, so the globally popular items are B's: popularity serves
    group A the wrong block while item-item models should not.
    """
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(240):
        block = 0 if u < 60 else 20
        chosen = rng.choice(20, size=8, replace=False) + block
        users += [u] * 8
        items += chosen.tolist()
    return Interactions.from_arrays(users, items, n_users=240, n_items=40)


# --- ranking helper -----------------------------------------------------------------------------


def test_top_k_orders_breaks_ties_by_index_and_pads() -> None:
    scores = np.array([[1.0, 3.0, 3.0, -np.inf, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert top_k(scores, 3).tolist() == [[1, 2, 4], [0, 1, 2]]
    assert top_k(scores, 6).tolist() == [[1, 2, 4, 0, -1, -1], [0, 1, 2, 3, 4, -1]]
    assert top_k(np.array([[np.nan, 1.0]]), 2).tolist() == [[1, -1]]


# --- contracts shared by every baseline ---------------------------------------------------------


def all_models() -> list[Recommender]:
    return [PopScorer(), EASE(EASEConfig(l2=10.0)), ALS(FAST_ALS)]


@pytest.mark.parametrize("model", all_models(), ids=lambda m: type(m).__name__)
def test_never_recommends_train_items_and_pads_only_when_needed(model: Recommender) -> None:
    data = random_log(n_users=30, n_items=25, n=300, seed=3)
    model.fit(data)
    assert isinstance(model, Recommender)
    users = np.arange(30)
    x = data.to_csr().toarray() > 0
    for k in (5, 25):
        ranked = model.recommend(users, k)
        assert ranked.shape == (30, k) and ranked.dtype == np.int64
        for u in users:
            row = ranked[u]
            real = row[row >= 0]
            assert len(set(real.tolist())) == real.size
            assert not x[u, real].any(), "recommended a train item"
            assert real.size == min(k, 25 - int(x[u].sum()))
            assert np.all(row[real.size :] == -1)


@pytest.mark.parametrize("model", all_models(), ids=lambda m: type(m).__name__)
def test_recommend_validates(model: Recommender) -> None:
    with pytest.raises(NotFittedError):
        model.recommend(np.array([0]), 3)
    model.fit(random_log(5, 6, 20, seed=0))
    for k in (0, -1):
        with pytest.raises(InvalidInputError):
            model.recommend(np.array([0]), k)
    with pytest.raises(InvalidInputError):
        model.recommend(np.array([5]), 3)
    assert model.recommend(np.array([], dtype=np.int64), 3).shape == (0, 3)


def test_batches_give_the_same_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    data = random_log(n_users=50, n_items=30, n=400, seed=5)
    model = EASE(EASEConfig(l2=5.0))
    model.fit(data)
    whole = model.recommend(np.arange(50), 7)
    monkeypatch.setattr("atlasrec.evaluation.baselines.SCORE_BUDGET", 30 * 3)  # 3 users a batch
    assert np.array_equal(model.recommend(np.arange(50), 7), whole)


# --- popularity ---------------------------------------------------------------------------------


def test_popularity_counts_distinct_users() -> None:
    # item 0: one user, five repeats; item 1: three users; item 2: two users
    data = Interactions.from_arrays(
        [0, 0, 0, 0, 0, 1, 2, 3, 1, 2], [0, 0, 0, 0, 0, 1, 1, 1, 2, 2], n_users=5, n_items=4
    )
    model = PopScorer()
    model.fit(data)
    assert model.recommend(np.array([4]), 4).tolist() == [[1, 2, 0, 3]]
    assert model.recommend(np.array([1]), 3).tolist() == [[0, 3, -1]]


# --- EASE ---------------------------------------------------------------------------------------


def test_ease_recommends_the_co_occurring_item() -> None:
    # users 0-2 take items {0, 1}; users 3-7 take items {2, 3}; user 8 has only item 0.
    # Popularity (2 and 3: five users each, 1: three) would offer item 2; EASE must offer 1.
    users = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8]
    items = [0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 0]
    data = Interactions.from_arrays(users, items)
    ease = EASE(EASEConfig(l2=1.0))
    ease.fit(data)
    assert ease.recommend(np.array([8]), 1).tolist() == [[1]]
    pop = PopScorer()
    pop.fit(data)
    assert pop.recommend(np.array([8]), 1).tolist() == [[2]]


@pytest.mark.parametrize(("n_users", "n_items"), [(40, 15), (10, 30)])
def test_ease_matches_the_closed_form(n_users: int, n_items: int) -> None:
    # (40, 15): direct Cholesky inverse; (10, 30): the Woodbury path (fewer users than items)
    data = random_log(n_users, n_items, n=n_users * 6, seed=11)
    lam = 3.0
    x = data.to_csr().toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + lam * np.eye(n_items))
    b = np.eye(n_items) - p / np.diag(p)[None, :]
    assert np.allclose(np.diag(b), 0.0)
    model = EASE(EASEConfig(l2=lam))
    model.fit(data)
    assert model._b is not None  # white-box: compare the learned weights themselves
    np.testing.assert_allclose(model._b, b, atol=1e-10)


def test_ease_refuses_too_many_items() -> None:
    data = random_log(5, 6, 20, seed=0)
    with pytest.raises(InvalidInputError, match="max_items"):
        EASE(EASEConfig(max_items=5)).fit(data)
    with pytest.raises(InvalidInputError):
        EASE(EASEConfig(l2=0.0))


# --- models on structured data, through the runner ----------------------------------------------


@pytest.fixture(scope="module")
def block_report() -> dict[str, dict[str, object]]:
    split = random_user_split(block_log(), test_fraction=0.25, seed=0)
    models: dict[str, Recommender] = {
        "random": RandomRecommender(),
        "pop": PopScorer(),
        "ease": EASE(EASEConfig(l2=10.0)),
        "als": ALS(FAST_ALS),
    }
    return evaluate(models, split, k=5)  # type: ignore[return-value]


def ndcg(report: dict[str, dict[str, object]], name: str, group: str = "all") -> float:
    value = report[name][group]["ndcg"]  # type: ignore[index]
    assert isinstance(value, float)
    return value


def test_ease_beats_popularity_on_blocks(block_report: dict[str, dict[str, object]]) -> None:
    # group A users (a quarter of the users) get B's items from popularity: all misses
    assert ndcg(block_report, "ease") > ndcg(block_report, "pop") + 0.1


def test_als_beats_random_on_blocks(block_report: dict[str, dict[str, object]]) -> None:
    assert ndcg(block_report, "als") > 2 * ndcg(block_report, "random")
    assert ndcg(block_report, "als") > ndcg(block_report, "pop")


def test_als_is_deterministic() -> None:
    data = random_log(n_users=40, n_items=30, n=400, seed=9)
    lists = []
    for _ in range(2):
        model = ALS(FAST_ALS)
        model.fit(data)
        lists.append(model.recommend(np.arange(40), 10))
    assert np.array_equal(lists[0], lists[1])


# --- runner -------------------------------------------------------------------------------------


def tiny_split() -> Split:
    # user 0: 1 train item (cold for cold_max=5), user 1: 6 train items (warm)
    train = Interactions.from_arrays(
        [0, 1, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4, 5, 6], n_users=3, n_items=10
    )
    test = {0: np.array([7]), 1: np.array([8, 9])}
    return Split("tiny", train, test)


def test_runner_reports_exact_groups() -> None:
    model = FixedRecommender({0: [7, 8, 9], 1: [9, 7, 8]})
    report = evaluate({"fixed": model}, tiny_split(), k=3, cold_max=5)
    assert model.fitted
    result = report["fixed"]
    # user 0 (cold): hit at 1 -> recall 1, ndcg 1, AP 1
    assert result["cold"] == {"recall": 1.0, "ndcg": 1.0, "map": 1.0, "coverage": 0.3, "users": 1}
    # user 1 (warm): hits at 1 and 3 -> recall 1, ndcg 1.5 / (1 + 1/log2 3), AP (1 + 2/3) / 2
    warm = result["warm"]
    assert warm["users"] == 1 and warm["recall"] == 1.0
    assert warm["ndcg"] == pytest.approx(1.5 / (1 + 1 / np.log2(3)))
    assert warm["map"] == pytest.approx(5 / 6)
    everyone = result["all"]
    assert everyone["users"] == 2 and everyone["coverage"] == pytest.approx(0.3)
    assert everyone["map"] == pytest.approx((1 + 5 / 6) / 2)
    assert isinstance(result["fit_seconds"], float)
    json.dumps(report, allow_nan=False)
    # the boundary is inclusive: 1 train item is cold at cold_max=1, 6 are cold at cold_max=6
    assert evaluate({"fixed": model}, tiny_split(), k=3, cold_max=1)["fixed"]["cold"]["users"] == 1
    assert evaluate({"fixed": model}, tiny_split(), k=3, cold_max=6)["fixed"]["cold"]["users"] == 2
    assert evaluate({"fixed": model}, tiny_split(), k=3, cold_max=5)["fixed"]["warm"]["users"] == 1
    # with cold_max=0 nobody is cold: the cold group is empty and reported as nulls
    report = evaluate({"fixed": model}, tiny_split(), k=3, cold_max=0)
    assert report["fixed"]["cold"] == {
        "recall": None,
        "ndcg": None,
        "map": None,
        "coverage": None,
        "users": 0,
    }


def test_runner_rejects_bad_k_and_leaky_models() -> None:
    model = FixedRecommender({0: [7, 8], 1: [9, 7]})
    with pytest.raises(InvalidInputError):
        evaluate({"fixed": model}, tiny_split(), k=0)
    with pytest.raises(InvalidInputError, match="train"):
        evaluate({"leaky": FixedRecommender({0: [0, 8], 1: [9, 7]})}, tiny_split(), k=2)
    with pytest.raises(InvalidInputError, match="shape"):
        evaluate({"short": model}, tiny_split(), k=3)


def test_runner_is_deterministic(block_report: dict[str, dict[str, object]]) -> None:
    split = random_user_split(block_log(), test_fraction=0.25, seed=0)
    again = evaluate({"ease": EASE(EASEConfig(l2=10.0)), "als": ALS(FAST_ALS)}, split, k=5)
    for name in ("ease", "als"):
        for group in ("all", "cold", "warm"):
            assert again[name][group] == block_report[name][group]


# --- MovieLens sanity check ---------------------------------------------------------------------


def load_movielens() -> Interactions:
    with (MOVIELENS_DIR / "ratings.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    raw_users = np.array([int(r["userId"]) for r in rows])
    raw_items = np.array([int(r["movieId"]) for r in rows])
    ts = np.array([int(r["timestamp"]) for r in rows])
    _, users = np.unique(raw_users, return_inverse=True)
    _, items = np.unique(raw_items, return_inverse=True)
    return Interactions.from_arrays(users, items, ts)


def test_movielens_temporal_leave_last_out() -> None:
    start = time.perf_counter()
    data = load_movielens()
    assert (len(data), data.n_users, data.n_items) == (100_836, 610, 9_724)
    split = temporal_leave_last_out(data)
    assert len(split.test) == 610
    models: dict[str, Recommender] = {"pop": PopScorer(), "ease": EASE(), "als": ALS()}
    report = evaluate(models, split, k=10)
    for name, result in report.items():
        everyone = result["all"]
        print(
            f"ml-latest-small leave-last-out {name}: NDCG@10={everyone['ndcg']:.4f} "
            f"Recall@10={everyone['recall']:.4f} MAP@10={everyone['map']:.4f} "
            f"coverage={everyone['coverage']:.4f} fit={result['fit_seconds']:.2f}s"
        )
    pop, ease = report["pop"]["all"]["ndcg"], report["ease"]["all"]["ndcg"]
    assert pop is not None and ease is not None
    assert ease > pop > 0
    assert time.perf_counter() - start < 60
