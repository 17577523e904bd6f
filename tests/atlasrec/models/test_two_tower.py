"""The model and its DP training: per-user losses, ghost clipping norms, planned steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlasrec.errors import InvalidInputError
from atlasrec.models.training import DpPlan, ExampleBuilder, dp_schedule, train
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig, sampled_softmax_loss

CONFIG = TwoTowerConfig(
    dim=8, hidden=16, history=5, positives=3, negatives=12, epochs=3, batch_size=4
)


def toy(n_users: int = 12, n_items: int = 30, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n_items, 10)).astype(np.float32)
    sequences = [
        rng.choice(n_items, size=rng.integers(2, 9), replace=False) for _ in range(n_users)
    ]
    return content, sequences


def test_sampled_softmax_matches_a_hand_computation() -> None:
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0]])  # 2 positives, 2 negatives
    loss = sampled_softmax_loss(logits, 2, torch.tensor([[1.0, 1.0]]), torch.tensor([[True, True]]))
    negs = np.log(np.exp(1.0) + np.exp(-1.0))
    expected = np.mean([-2 + np.logaddexp(2, negs), -0 + np.logaddexp(0, negs)])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_each_users_loss_depends_only_on_that_users_data() -> None:
    content, sequences = toy()
    model = TwoTower(content, CONFIG)
    batch = ExampleBuilder(sequences, 30, CONFIG).build(torch.arange(4), np.random.default_rng(0))
    base = sampled_softmax_loss(model(*batch[:3]), CONFIG.positives, batch[3], batch[4])
    changed = [t.clone() for t in batch]
    changed[0][1] = torch.randint(0, 30, changed[0][1].shape)  # another history for user 1
    changed[2][1] = torch.randint(0, 30, changed[2][1].shape)
    other = sampled_softmax_loss(model(*changed[:3]), CONFIG.positives, changed[3], changed[4])
    assert torch.allclose(base[[0, 2, 3]], other[[0, 2, 3]])
    assert not torch.isclose(base[1], other[1])


def test_the_item_tower_once_per_distinct_item_gives_the_same_loss_and_gradients() -> None:
    content, sequences = toy()
    model = TwoTower(content, CONFIG)
    batch = ExampleBuilder(sequences, 30, CONFIG).build(torch.arange(8), np.random.default_rng(2))
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for shared in (False, True):
        model.shared_items = shared
        loss = sampled_softmax_loss(model(*batch[:3]), CONFIG.positives, batch[3], batch[4])
        results.append((loss.detach(), torch.autograd.grad(loss.sum(), params)))
    (per_row, row_grads), (once, once_grads) = results
    torch.testing.assert_close(once, per_row)
    for a, b in zip(once_grads, row_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert batch[2].unique().numel() < batch[2].numel()  # items did repeat in the batch


@pytest.mark.parametrize("dp", [False, True])
def test_training_leaves_per_row_item_vectors_for_opacus(dp: bool) -> None:
    content, sequences = toy()
    rate, steps = dp_schedule(len(sequences), CONFIG)
    plan = DpPlan(1.5, rate, steps, CONFIG.max_grad_norm, 1e-5) if dp else None
    model, _ = train(content, sequences, CONFIG, dp=plan)
    assert model.shared_items is False


def test_opacus_per_user_gradients_equal_explicit_ones() -> None:
    from opacus import GradSampleModule

    torch.manual_seed(57)  # a seed whose float32 rounding once tripped a too-tight tolerance
    content, sequences = toy()
    model = TwoTower(content, CONFIG)
    batch = ExampleBuilder(sequences, 30, CONFIG).build(torch.arange(6), np.random.default_rng(1))
    params = [p for p in model.parameters() if p.requires_grad]
    explicit = []
    for u in range(6):
        one = [t[u : u + 1] for t in batch]
        loss = sampled_softmax_loss(model(*one[:3]), CONFIG.positives, one[3], one[4]).sum()
        explicit.append(torch.autograd.grad(loss, params))
    wrapped = GradSampleModule(model)  # loss reduction "mean", as in training
    losses = sampled_softmax_loss(wrapped(*batch[:3]), CONFIG.positives, batch[3], batch[4])
    losses.mean().backward()
    for n, p in enumerate(params):
        per_user = torch.stack([grads[n] for grads in explicit])
        scale = float(per_user.abs().max()) + 1e-12  # float32 sums: tolerance relative to size
        torch.testing.assert_close(p.grad_sample, per_user, rtol=1e-4, atol=1e-5 * scale)  # type: ignore[attr-defined]


def test_every_step_adds_noise_even_for_an_empty_poisson_batch() -> None:
    content, sequences = toy(n_users=3)
    config = TwoTowerConfig(**{**CONFIG.as_dict(), "batch_size": 1, "epochs": 8})
    rate, steps = dp_schedule(3, config)  # q = 1/3: about 30% of batches are empty
    _, report = train(content, sequences, config, dp=DpPlan(1.0, rate, steps, 1.0, 1e-5))
    assert report.steps == report.noisy_steps == steps == 24


def test_plain_training_learns() -> None:
    content, sequences = toy()
    _, report = train(content, sequences, TwoTowerConfig(**{**CONFIG.as_dict(), "epochs": 15}))
    assert report.losses[-1] < report.losses[0]


def test_dp_training_runs_exactly_the_planned_steps() -> None:
    content, sequences = toy()
    rate, steps = dp_schedule(len(sequences), CONFIG)
    plan = DpPlan(1.5, rate, steps, CONFIG.max_grad_norm, 1e-5)
    model, report = train(content, sequences, CONFIG, dp=plan)
    assert report.steps == steps == CONFIG.epochs * 3
    assert report.epsilon_spent is not None and report.epsilon_spent > 0
    assert model.all_item_vectors().shape == (30, CONFIG.dim)


@pytest.mark.parametrize("dp", [False, True])
def test_past_the_example_budget_a_training_runs_fewer_epochs(dp: bool) -> None:
    content, sequences = toy()  # 12 users: a budget of 30 examples allows 2 epochs of 3
    config = TwoTowerConfig(**{**CONFIG.as_dict(), "example_budget": 30})
    rate, steps = dp_schedule(len(sequences), config)
    plan = DpPlan(1.5, rate, steps, config.max_grad_norm, 1e-5) if dp else None
    model, report = train(content, sequences, config, dp=plan)
    assert report.epochs == model.config.epochs == len(report.losses) == 2
    assert report.steps == steps == 2 * 3  # 3 batches of 4 users an epoch
    assert config.for_users(12) == model.config.for_users(12)  # applied once or twice
    assert config.for_users(10**6).epochs == 1 and config.for_users(1).epochs == 3


def test_a_plan_that_does_not_match_the_schedule_is_refused() -> None:
    content, sequences = toy()
    with pytest.raises(InvalidInputError, match="does not match"):
        train(content, sequences, CONFIG, dp=DpPlan(1.0, 0.5, 7, 1.0, 1e-5))


def test_no_interactions_is_a_clear_error() -> None:
    content, _ = toy()
    with pytest.raises(InvalidInputError, match="no interactions"):
        train(content, [np.array([], dtype=np.int64)], CONFIG)


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_examples_hold_out_next_or_random_items(share: float) -> None:
    _, sequences = toy()
    config = TwoTowerConfig(**{**CONFIG.as_dict(), "random_share": share})
    history, h_mask, candidates, p_mask, _ = ExampleBuilder(sequences, 30, config).build(
        torch.arange(12), np.random.default_rng(3)
    )
    for u in range(12):
        seq = list(sequences[u])
        hist = [int(i) for i, m in zip(history[u], h_mask[u], strict=True) if m]
        pos = [
            int(i) for i, m in zip(candidates[u, : config.positives], p_mask[u], strict=True) if m
        ]
        assert pos and not set(hist) & set(pos) and set(hist) | set(pos) <= set(seq)
        if share == 0.0:  # the positives come right after the history, in order
            start = seq.index(pos[0])
            assert seq[start : start + len(pos)] == pos and hist == seq[start - len(hist) : start]
