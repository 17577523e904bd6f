"""Top-k metrics: hand-computed values, a naive reference, and properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.errors import InvalidInputError
from atlasrec.evaluation import coverage_at_k, map_at_k, ndcg_at_k, recall_at_k


def test_hits_at_positions_one_and_three() -> None:
    ranked = np.array([[5, 3, 7, 1]])
    truth = [np.array([7, 5])]
    # hits at positions 1 and 3, |T| = 2
    # recall = 2 / 2
    assert recall_at_k(ranked, truth) == pytest.approx([1.0])
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG over min(2, 4) = 2 slots = 1 + 1/log2(3)
    expected_ndcg = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(ranked, truth) == pytest.approx([expected_ndcg])
    assert expected_ndcg == pytest.approx(0.919721, abs=1e-6)
    # AP = (P@1 + P@3) / min(2, 4) = (1/1 + 2/3) / 2 = 5/6
    assert map_at_k(ranked, truth) == pytest.approx([5 / 6])


def test_cutting_at_k_two_keeps_only_the_first_hit() -> None:
    ranked = np.array([[5, 3, 7, 1]])
    truth = [np.array([5, 7])]
    # top-2 = [5, 3]: one hit at position 1
    assert recall_at_k(ranked, truth, k=2) == pytest.approx([0.5])  # 1 / |T| = 1/2
    # DCG = 1; IDCG over min(2, 2) = 2 slots = 1 + 1/log2(3)
    assert ndcg_at_k(ranked, truth, k=2) == pytest.approx([1 / (1 + 1 / math.log2(3))])
    # AP@2 = P@1 / min(2, 2) = 1/2
    assert map_at_k(ranked, truth, k=2) == pytest.approx([0.5])


def test_single_relevant_item_at_position_two() -> None:
    ranked = np.array([[4, 9, 1]])
    truth = [np.array([9])]
    assert recall_at_k(ranked, truth) == pytest.approx([1.0])
    # DCG = 1/log2(3); IDCG = 1
    assert ndcg_at_k(ranked, truth) == pytest.approx([1 / math.log2(3)])
    # AP = P@2 / min(1, 3) = (1/2) / 1
    assert map_at_k(ranked, truth) == pytest.approx([0.5])


def test_recall_uses_the_full_truth_size_as_denominator() -> None:
    ranked = np.array([[0, 1]])
    truth = [np.array([0, 1, 2, 3])]
    # both slots hit but |T| = 4 > k = 2: recall = 2/4 (not 2/min(4, 2) = 1)
    assert recall_at_k(ranked, truth) == pytest.approx([0.5])
    # NDCG and AP normalise by min(|T|, k) = 2, so a perfect top-2 scores 1
    assert ndcg_at_k(ranked, truth) == pytest.approx([1.0])
    assert map_at_k(ranked, truth) == pytest.approx([1.0])


def test_several_users_and_misses() -> None:
    ranked = np.array([[1, 2, 3], [3, 2, 1], [7, 8, 9]])
    truth = [np.array([3]), np.array([3, 1]), np.array([0])]
    # user 0: hit at 3 -> recall 1, ndcg 1/log2(4) = 0.5, AP = (1/3) / 1
    # user 1: hits at 1 and 3 -> recall 1, ndcg (1 + 0.5) / (1 + 1/log2(3)), AP (1 + 2/3) / 2
    # user 2: no hit -> 0 everywhere
    assert recall_at_k(ranked, truth) == pytest.approx([1.0, 1.0, 0.0])
    assert ndcg_at_k(ranked, truth) == pytest.approx([0.5, 1.5 / (1 + 1 / math.log2(3)), 0.0])
    assert map_at_k(ranked, truth) == pytest.approx([1 / 3, 5 / 6, 0.0])


def test_padding_never_counts_as_a_hit() -> None:
    # The keys are row * stride + item with stride = 3 here; the -1 of row 1 would collide
    # with item 2 of row 0 if padding were not masked.
    ranked = np.array([[2, 0], [-1, -1]])
    truth = [np.array([2]), np.array([1])]
    assert recall_at_k(ranked, truth) == pytest.approx([1.0, 0.0])
    assert ndcg_at_k(ranked, truth) == pytest.approx([1.0, 0.0])
    assert map_at_k(ranked, truth) == pytest.approx([1.0, 0.0])


def test_duplicate_truth_entries_count_once() -> None:
    ranked = np.array([[4, 5]])
    assert recall_at_k(ranked, [np.array([4, 4, 6])]) == pytest.approx([0.5])


def test_coverage() -> None:
    ranked = np.array([[0, 1], [1, 2], [-1, 2]])
    # distinct items {0, 1, 2} out of 10; padding ignored
    assert coverage_at_k(ranked, 10) == pytest.approx(0.3)
    # top-1 only: {0, 1}
    assert coverage_at_k(ranked, 10, k=1) == pytest.approx(0.2)
    assert coverage_at_k(np.zeros((0, 3), dtype=np.int64), 10) == 0.0
    with pytest.raises(InvalidInputError):
        coverage_at_k(ranked, 2)


def test_empty_input_gives_empty_arrays() -> None:
    assert recall_at_k(np.zeros((0, 4), dtype=np.int64), []).shape == (0,)


@pytest.mark.parametrize(
    ("ranked", "truth", "k"),
    [
        (np.array([[1, 1]]), [np.array([1])], None),  # repeated item
        (np.array([[1, 2]]), [np.array([], dtype=np.int64)], None),  # empty truth
        (np.array([[1, 2]]), [np.array([1])], 0),
        (np.array([[1, 2]]), [np.array([1])], 3),
        (np.array([[1, 2]]), [np.array([1]), np.array([2])], None),  # length mismatch
        (np.array([1, 2]), [np.array([1])], None),  # not 2-D
        (np.array([[1.0, 2.0]]), [np.array([1])], None),  # not integers
        (np.array([[-2, 1]]), [np.array([1])], None),  # bad padding
    ],
)
def test_invalid_inputs(ranked: np.ndarray, truth: list[np.ndarray], k: int | None) -> None:
    for metric in (recall_at_k, ndcg_at_k, map_at_k):
        with pytest.raises(InvalidInputError):
            metric(ranked, truth, k)


def _reference(ranked: list[int], truth: set[int], k: int) -> tuple[float, float, float]:
    """Straight loops over the documented definitions."""
    hits = [1 if item in truth else 0 for item in ranked[:k]]
    recall = sum(hits) / len(truth)
    dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
    idcg = sum(1 / math.log2(j + 2) for j in range(min(len(truth), k)))
    ap = sum(sum(hits[: j + 1]) / (j + 1) for j, h in enumerate(hits) if h)
    return recall, dcg / idcg, ap / min(len(truth), k)


@st.composite
def rankings(draw: st.DrawFn) -> tuple[np.ndarray, list[np.ndarray]]:
    n_items = draw(st.integers(1, 25))
    width = draw(st.integers(1, n_items))
    n_users = draw(st.integers(1, 6))
    rows, truth = [], []
    for _ in range(n_users):
        perm = draw(st.permutations(range(n_items)))
        n_real = draw(st.integers(0, width))
        rows.append(list(perm[:n_real]) + [-1] * (width - n_real))
        rel = draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=n_items))
        truth.append(np.array(sorted(rel), dtype=np.int64))
    return np.array(rows, dtype=np.int64).reshape(n_users, width), truth


@settings(max_examples=150, deadline=None)
@given(rankings())
def test_matches_reference_and_stays_in_unit_interval(
    case: tuple[np.ndarray, list[np.ndarray]],
) -> None:
    ranked, truth = case
    for k in range(1, ranked.shape[1] + 1):
        got = np.stack([recall_at_k(ranked, truth, k), ndcg_at_k(ranked, truth, k)])
        got = np.vstack([got, map_at_k(ranked, truth, k)])
        assert np.all((got >= 0) & (got <= 1 + 1e-12))
        for u, row in enumerate(ranked):
            expected = _reference(row.tolist(), set(truth[u].tolist()), k)
            assert got[:, u] == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(rankings())
def test_recall_is_monotone_in_k(case: tuple[np.ndarray, list[np.ndarray]]) -> None:
    ranked, truth = case
    recalls = [recall_at_k(ranked, truth, k) for k in range(1, ranked.shape[1] + 1)]
    for smaller, larger in itertools.pairwise(recalls):
        assert np.all(smaller <= larger)


@settings(max_examples=100, deadline=None)
@given(rankings(), st.data())
def test_perfect_ranking_scores_one(
    case: tuple[np.ndarray, list[np.ndarray]], data: st.DataObject
) -> None:
    _, truth = case
    n_items = max(int(t.max()) for t in truth) + 1
    k = data.draw(st.integers(1, n_items))
    # relevant items first (in any order), then the rest of the catalog
    rows = []
    for t in truth:
        rest = [i for i in range(n_items) if i not in set(t.tolist())]
        rows.append((list(data.draw(st.permutations(t.tolist()))) + rest)[:k])
    ranked = np.array(rows, dtype=np.int64)
    sizes = np.array([t.size for t in truth])
    assert ndcg_at_k(ranked, truth) == pytest.approx(np.ones(len(truth)))
    assert map_at_k(ranked, truth) == pytest.approx(np.ones(len(truth)))
    assert recall_at_k(ranked, truth) == pytest.approx(np.minimum(sizes, k) / sizes)
    assert coverage_at_k(ranked, n_items) <= 1.0
