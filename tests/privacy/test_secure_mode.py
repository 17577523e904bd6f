"""DP secure mode: CSPRNG uniforms and normals, Poisson sampling, and Opacus' noise step."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from scipy import stats

from atlasrec.models.training import DpPlan, dp_schedule, train
from atlasrec.models.two_tower import TwoTowerConfig
from privacy import secure_mode
from privacy.secure_mode import SecurePoissonSampler, SecurePrivacyEngine, normal, uniform

CONFIG = TwoTowerConfig(
    dim=8, hidden=16, history=5, positives=3, negatives=12, epochs=3, batch_size=4
)


def test_uniforms_lie_in_the_open_unit_interval_on_a_53_bit_grid() -> None:
    u = uniform(200_000)
    assert u.shape == (200_000,) and u.min() > 0.0 and u.max() <= 1.0
    assert np.all(np.mod(u * 2.0**53, 1.0) == 0.0)
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / len(u))
    assert len(np.unique(u)) > 199_990  # 53-bit draws almost never repeat


@pytest.mark.parametrize("std", [0.5, 3.0])
def test_normals_follow_the_requested_gaussian(std: float) -> None:
    x = normal((400, 250), std)
    assert x.shape == (400, 250)
    assert stats.kstest(x.ravel(), "norm", args=(0.0, std)).pvalue > 1e-4
    assert normal(7, std).shape == (7,)  # odd sizes: Box-Muller pairs are trimmed


def test_normals_come_from_the_os_csprng_not_a_seedable_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        drawn.append(n)
        return real(n)

    monkeypatch.setattr(secure_mode.os, "urandom", counting)
    np.random.seed(0)
    torch.manual_seed(0)
    first = normal(1_000, 1.0)
    np.random.seed(0)
    torch.manual_seed(0)
    assert not np.array_equal(first, normal(1_000, 1.0))
    # two uniforms per pair of normals, four normals summed per sample, 8 bytes per uniform
    assert sum(drawn) == 2 * 2 * 4 * 8 * 500


def test_the_sampler_includes_each_example_with_the_sample_rate() -> None:
    sampler = SecurePoissonSampler(num_samples=2_000, sample_rate=0.05, steps=40)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 40
    sizes = np.array([len(b) for b in batches])
    assert abs(sizes.mean() - 100) < 5 * math.sqrt(100 * 0.95 / 40)
    assert all(b == sorted(set(b)) and all(0 <= i < 2_000 for i in b) for b in batches)
    assert any(len(b) == 0 for b in SecurePoissonSampler(num_samples=3, sample_rate=0.2, steps=40))


@pytest.mark.filterwarnings("ignore:Full backward hook")  # the input needs no gradient
def test_the_secure_engine_adds_noise_of_the_planned_scale() -> None:
    """A zero gradient: one SGD step (lr 1) moves the weights by exactly the noise / B."""
    torch.manual_seed(0)
    model = torch.nn.Linear(200, 200, bias=False)
    data = torch.utils.data.TensorDataset(torch.zeros(40, 200))
    loader = torch.utils.data.DataLoader(data, batch_size=8)  # q = 1/5, expected batch 8
    engine = SecurePrivacyEngine()
    dp_model, optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        data_loader=loader,
        noise_multiplier=2.0,
        max_grad_norm=1.5,
        poisson_sampling=True,
    )
    assert isinstance(dp_loader.batch_sampler, SecurePoissonSampler)
    before = model.weight.detach().clone()
    (batch,) = next(iter(torch.utils.data.DataLoader(data, batch_size=8)))
    dp_model(batch).sum().mul(0.0).backward()
    optimizer.step()
    moved = (model.weight.detach() - before).ravel().numpy() * -8  # undo lr and the mean
    assert stats.kstest(moved, "norm", args=(0.0, 2.0 * 1.5)).pvalue > 1e-4
    assert type(optimizer).__name__ == "SecureDPOptimizer"


def test_secure_dp_training_runs_every_planned_noisy_step() -> None:
    rng = np.random.default_rng(0)
    content = rng.normal(size=(30, 10)).astype(np.float32)
    sequences = [rng.choice(30, size=rng.integers(2, 9), replace=False) for _ in range(12)]
    rate, steps = dp_schedule(len(sequences), CONFIG)
    plan = DpPlan(1.5, rate, steps, CONFIG.max_grad_norm, 1e-5, secure_mode=True)
    first, report = train(content, sequences, CONFIG, dp=plan)
    assert report.steps == report.noisy_steps == steps
    assert report.epsilon_spent is not None and report.epsilon_spent > 0
    second, _ = train(content, sequences, CONFIG, dp=plan)  # same seed, fresh CSPRNG noise
    assert not identical(first, second)
    plain = DpPlan(1.5, rate, steps, CONFIG.max_grad_norm, 1e-5)
    a, _ = train(content, sequences, CONFIG, dp=plain)
    b, _ = train(content, sequences, CONFIG, dp=plain)  # torch's generator: seeded, repeatable
    assert identical(a, b)


def identical(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)
