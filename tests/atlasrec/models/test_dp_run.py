"""A DP run's mechanisms and its validation release: accounting, the floor, no leakage."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from atlasrec.evaluation import Interactions
from atlasrec.models import dp_run
from atlasrec.models.dp_ease import GRAM_SHARE
from atlasrec.models.dp_run import fit_dp_run, run_mechanisms
from atlasrec.models.dp_validation import (
    SWITCH_Z,
    VALIDATION_SHARE,
    popularity_top_k,
    release_choice,
    validation_cut,
)
from atlasrec.models.ranking.default_order import MIN_VALIDATION_USERS
from atlasrec.models.ranking.features import category_codes
from atlasrec.models.training import DpPlan, dp_schedule
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import dp_config
from privacy.accounting import Mechanism, epsilon, independent_epsilon

CONFIG = replace(dp_config(TwoTowerConfig(dim=8, history=5, epochs=1)), pretrain_steps=5)


@pytest.mark.parametrize("run_epsilon", [1.0, 8.0])
def test_a_training_run_composes_its_four_mechanisms_to_its_epsilon(run_epsilon: float) -> None:
    counts, grams, validation, sgd = run_mechanisms(run_epsilon, 1e-5, 0.05, 600, 1000)
    assert counts is not None and grams is not None and validation is not None
    total = epsilon([counts, grams, validation, sgd], 1e-5)
    assert total <= run_epsilon + 1e-9 and total == pytest.approx(run_epsilon, rel=0.01)
    assert epsilon([grams], 1e-5) == pytest.approx(GRAM_SHARE * run_epsilon, rel=0.02)
    assert epsilon([validation], 1e-5) == pytest.approx(VALIDATION_SHARE * run_epsilon, rel=0.02)
    both = [counts, grams, validation, sgd]
    assert independent_epsilon(both, 1e-5) == pytest.approx(total, rel=0.01)  # dp_accounting


def test_too_small_a_run_epsilon_releases_no_gram_matrix_and_no_validation() -> None:
    counts, grams, validation, sgd = run_mechanisms(0.3, 1e-5, 0.05, 600, 1000)
    assert counts is None and grams is None and validation is None
    assert epsilon([sgd], 1e-5) == pytest.approx(0.3, rel=0.01)


def test_a_tenant_too_small_to_validate_on_releases_no_validation() -> None:
    few = run_mechanisms(8.0, 1e-5, 0.05, 600, MIN_VALIDATION_USERS - 1)
    enough = run_mechanisms(8.0, 1e-5, 0.05, 600, MIN_VALIDATION_USERS)
    assert few.validation is None and enough.validation is not None
    assert epsilon([m for m in few if m is not None], 1e-5) == pytest.approx(8.0, rel=0.01)


def test_profile_is_kept_above_popularity_next_where_it_leads_and_popularity_is_the_floor() -> None:
    exact = Mechanism(1e-9, 1.0, 1)  # noise too small to matter: the rule itself
    better = {"next": np.full(50, -0.01), "profile": np.full(50, 0.02)}
    order, entry = release_choice(better, exact)
    assert (order.order, order.below_popularity) == ("profile", ("next",))
    assert entry["dp_validation"]["noisy_mean_ndcg_gain_over_popularity"]["profile"] == 0.02
    next_higher = {"next": np.full(50, 0.03), "profile": np.full(50, 0.01)}
    order, entry = release_choice(next_higher, exact)  # noise-free: any lead is the data's
    assert order.order == "next" and "leads profile's" in entry["reason"]
    pop_floor = {"next": np.full(50, 0.03), "profile": np.full(50, -0.01)}
    assert release_choice(pop_floor, exact)[0].order == "next"
    worse = {"next": np.full(50, -0.01), "profile": np.full(50, -0.02)}
    order, entry = release_choice(worse, exact)
    assert order.order == "popularity" and order.below_popularity == ("next", "profile")
    assert "the floor" in entry["reason"]
    without_profile = {"next": np.full(50, 0.01)}  # no Gram release: the next order
    assert release_choice(without_profile, exact)[0].order == "next"


def test_next_replaces_profile_only_by_more_than_the_noise_margin() -> None:
    mechanism = Mechanism(3.0, 1.0, 1)  # sd of a sum: 3 * sqrt(2); of a difference: 6
    margin = SWITCH_Z * 6.0
    within = {"next": np.full(100, (0.5 * margin + 1.0) / 100), "profile": np.full(100, 0.01)}
    beyond = {"next": np.full(100, (3.0 * margin + 1.0) / 100), "profile": np.full(100, 0.01)}
    picks = [release_choice(within, mechanism)[0].order for _ in range(400)]
    assert picks.count("next") / 400 < 0.5  # half the margin: about 16% by noise
    far = [release_choice(beyond, mechanism)[0].order for _ in range(400)]
    assert far.count("next") / 400 > 0.95
    entry = release_choice(within, mechanism)[1]["dp_validation"]
    assert entry["next_margin_of_the_mean"] == pytest.approx(margin / 100)


def test_the_validation_release_adds_noise_of_its_mechanisms_scale() -> None:
    mechanism = Mechanism(3.0, 1.0, 1)
    gains = {"next": np.zeros(40), "profile": np.zeros(40)}
    means = [
        release_choice(gains, mechanism)[1]["dp_validation"]["noisy_mean_ndcg_gain_over_popularity"]
        for _ in range(2000)
    ]
    observed = np.std([m["next"] for m in means] + [m["profile"] for m in means])
    expected = 3.0 * np.sqrt(2) / 40  # a user's gain vector has L2 norm up to sqrt(2)
    assert observed == pytest.approx(expected, rel=0.06)


def test_popularity_is_by_the_released_counts_and_never_a_seen_item() -> None:
    log = Interactions.from_arrays(
        np.array([0, 0, 1]), np.array([3, 1, 2]), np.arange(3), n_users=2, n_items=5
    )
    counts = np.array([5.0, 9.0, 1.0, 7.0, 0.0])
    top = popularity_top_k(counts, log, np.array([0, 1]), 3)
    assert top.tolist() == [[0, 2, 4], [1, 3, 0]]


def _log(n_users: int = 40, n_items: int = 25) -> Interactions:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(n_users), 6)
    items = np.concatenate([rng.choice(n_items, 6, replace=False) for _ in range(n_users)])
    ts = np.arange(len(users))
    return Interactions.from_arrays(users, items, ts, n_users=n_users, n_items=n_items)


def test_a_validated_run_never_fits_on_the_items_it_validates_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _log()
    fitted_on: list[list[np.ndarray]] = []
    for name, position in (("release_counts", 0), ("fit_dp_ease", 0), ("train", 1)):
        monkeypatch.setattr(dp_run, name, _spy(getattr(dp_run, name), position, fitted_on))
    rate, steps = dp_schedule(40, CONFIG)
    mechanisms = run_mechanisms(8.0, 1e-5, rate, steps, 40)
    plan = DpPlan(mechanisms.sgd.noise_multiplier, rate, steps, CONFIG.max_grad_norm, 1e-5)
    content = np.random.default_rng(1).normal(size=(25, 6)).astype(np.float32)
    fit = fit_dp_run(content, category_codes([None] * 25), data, CONFIG, mechanisms, plan)
    cut = validation_cut(data)
    assert len(fitted_on) == 3 and cut.latest and cut.middle
    for sequences in fitted_on:
        for user, item in [*cut.latest.items(), *cut.middle.items()]:
            assert item not in sequences[user].tolist()
    assert fit.order_lineage["dp_validation"]["users"] == len(set(cut.latest) | set(cut.middle))
    assert fit.order.order == fit.order_lineage["chosen"]


def _spy(real: Any, position: int, fitted_on: list[list[np.ndarray]]) -> Any:
    """`real`, recording the sequences (its argument at `position`) it is called with."""

    def spy(*args: Any, **kwargs: Any) -> Any:
        fitted_on.append(list(args[position]))
        return real(*args, **kwargs)

    return spy
