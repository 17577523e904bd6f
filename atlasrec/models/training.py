"""Training of the two-tower model: plain, or user-level DP-SGD with Opacus.

One training example is one user: up to `positives` of the user's items as targets and up
to `history` of the others as the user tower's input, re-drawn every epoch. With DP, users
are Poisson-sampled, each user's gradient is clipped (Opacus per-sample gradients, "hooks"
mode: measured 1.1x the non-private epoch time for this model, where ghost clipping took 4x,
since its norms grow with the square of the history + candidates length) and Gaussian noise
is added, so the model is (epsilon, delta)-DP with respect to any one user's whole history.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from atlasrec.errors import InvalidInputError
from atlasrec.models.pretrain import pretrain_backbone
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig, sampled_softmax_loss
from privacy.secure_mode import privacy_engine

Progress = Callable[[int, int, float], None]
"""Called after each epoch with (epoch, epochs, mean loss)."""


@dataclass(frozen=True)
class DpPlan:
    """The DP-SGD mechanism of a run: fixed before the first step and charged up front."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    delta: float
    secure_mode: bool = False


@dataclass
class TrainReport:
    """What a training run did."""

    epochs: int
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    epsilon_spent: float | None = None
    noisy_steps: int = 0


def dp_schedule(n_users: int, config: TwoTowerConfig) -> tuple[float, int]:
    """Sample rate and total steps of DP training (as Opacus' Poisson loader will run it)."""
    steps_per_epoch = max(1, math.ceil(n_users / config.batch_size))
    return 1.0 / steps_per_epoch, steps_per_epoch * config.for_users(n_users).epochs


class _Users(Dataset[tuple[torch.Tensor]]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (torch.tensor(index, dtype=torch.long),)


class ExampleBuilder:
    """Builds the per-user tensors of a batch from the users' item sequences."""

    def __init__(
        self, sequences: Sequence[np.ndarray], n_items: int, config: TwoTowerConfig
    ) -> None:
        self.sequences = sequences
        self.n_items = n_items
        self.config = config

    def build(self, users: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """(history, history mask, candidates, positive mask, negative mask) for `users`."""
        c = self.config
        b, pad = len(users), self.n_items
        history = np.full((b, c.history), pad, dtype=np.int64)
        positives = np.full((b, c.positives), pad, dtype=np.int64)
        negatives = rng.integers(0, self.n_items, size=(b, c.negatives))
        for row, u in enumerate(users.tolist()):
            seq = self.sequences[u]
            if c.random_share > 0 and len(seq) > 1 and rng.random() < c.random_share:
                # items held out from anywhere in the history, the rest as context
                chosen = rng.choice(
                    len(seq), size=min(c.positives, len(seq) // 2 or 1), replace=False
                )
                window, before = seq[chosen], np.delete(seq, chosen)[-c.history :]
            else:
                cut = int(rng.integers(1, len(seq))) if len(seq) > 1 else 0
                window = seq[cut : cut + c.positives]  # what came next ...
                before = seq[max(0, cut - c.history) : cut]  # ... after this history
            positives[row, : len(window)] = window
            history[row, c.history - len(before) :] = before  # right-aligned: recent last
        seen = np.zeros((b, c.negatives), dtype=bool)
        for row, u in enumerate(users.tolist()):
            seen[row] = np.isin(negatives[row], self.sequences[u])
        t = torch.from_numpy
        return (
            t(history),
            t(history != pad).float(),
            t(np.concatenate([positives, negatives], 1)),
            t(positives != pad).float(),
            t(~seen),
        )


def _loss(
    model: torch.nn.Module, config: TwoTowerConfig, batch: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    history, h_mask, candidates, p_mask, n_mask = batch
    logits = model(history, h_mask, candidates)
    return sampled_softmax_loss(logits, config.positives, p_mask, n_mask)


def train(
    content: np.ndarray,
    sequences: Sequence[np.ndarray],
    config: TwoTowerConfig,
    *,
    dp: DpPlan | None = None,
    init_backbone: dict[str, torch.Tensor] | None = None,
    popularity: np.ndarray | None = None,
    progress: Progress | None = None,
) -> tuple[TwoTower, TrainReport]:
    """Train a tenant's two-tower model; with `dp`, exactly `dp.steps` DP-SGD steps.

    It runs `config.for_users(n)` epochs over the n users with interactions (the example
    budget); the model's `config` says so.

    The towers start from `init_backbone`, else from content-only pretraining
    (`pretrain_backbone`). `popularity` is the prior's per-item counts: with `dp` they must
    be a DP release (`atlasrec.models.popularity.release_counts`), never exact counts.
    """
    if not sequences or all(len(s) == 0 for s in sequences):
        raise InvalidInputError("the tenant has no interactions to train on")
    users = [u for u, s in enumerate(sequences) if len(s) > 0]
    config = config.for_users(len(users))  # the example budget
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = TwoTower(content, config)
    model.backbone.load_state_dict(
        init_backbone if init_backbone is not None else pretrain_backbone(content, config)
    )
    if popularity is not None:
        model.set_popularity(popularity)
    else:  # no counts, no prior: its weight stays 0 (and DP-SGD leaves it alone)
        with torch.no_grad():
            model.popularity.weight.zero_()
        model.popularity.weight.requires_grad_(False)
    builder = ExampleBuilder([sequences[u] for u in users], model.n_items, config)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    started = time.perf_counter()
    if dp is None:
        report = _train_plain(model, builder, len(users), optimizer, rng, progress)
    else:
        report = _train_private(model, builder, len(users), optimizer, rng, dp, progress)
    report.seconds = time.perf_counter() - started
    model.eval()
    return model, report


def _train_plain(
    model: TwoTower,
    builder: ExampleBuilder,
    n_users: int,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    progress: Progress | None,
) -> TrainReport:
    c = model.config
    report = TrainReport(epochs=c.epochs, steps=0, seconds=0.0)
    model.shared_items = True  # no per-user gradients here: the item tower runs once per item
    try:
        _plain_epochs(model, builder, n_users, optimizer, rng, report, progress)
    finally:
        model.shared_items = False
    return report


def _plain_epochs(
    model: TwoTower,
    builder: ExampleBuilder,
    n_users: int,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    report: TrainReport,
    progress: Progress | None,
) -> None:
    c = model.config
    for epoch in range(c.epochs):
        order = torch.from_numpy(rng.permutation(n_users))
        total = 0.0
        for start in range(0, n_users, c.batch_size):
            loss = _loss(model, c, builder.build(order[start : start + c.batch_size], rng)).mean()
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(loss.detach()) * len(order[start : start + c.batch_size])
            report.steps += 1
        report.losses.append(total / n_users)
        if progress:
            progress(epoch + 1, c.epochs, report.losses[-1])


def _train_private(
    model: TwoTower,
    builder: ExampleBuilder,
    n_users: int,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    plan: DpPlan,
    progress: Progress | None,
) -> TrainReport:
    c = model.config
    sample_rate, steps = dp_schedule(n_users, c)
    if not math.isclose(sample_rate, plan.sample_rate) or steps != plan.steps:
        raise InvalidInputError("the DP plan does not match this training schedule")
    engine = privacy_engine(secure=plan.secure_mode)
    loader = DataLoader(_Users(n_users), batch_size=c.batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus' notes on secure mode and optimizer state
        private = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            criterion=torch.nn.CrossEntropyLoss(),
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode="hooks",
        )
    dp_model, dp_optimizer, dp_loader = private
    report = TrainReport(epochs=c.epochs, steps=0, seconds=0.0)
    with warnings.catch_warnings():
        # Opacus notes on backward hooks and on secure mode (recorded in the lineage instead).
        warnings.simplefilter("ignore", UserWarning)
        _private_epochs(dp_model, dp_optimizer, dp_loader, builder, rng, c, report, progress)
    report.noisy_steps = sum(int(n) for _, _, n in engine.accountant.history)
    if report.steps != plan.steps or report.noisy_steps != plan.steps:
        raise RuntimeError(
            f"DP training ran {report.steps} steps ({report.noisy_steps} with noise), "
            f"planned {plan.steps}"
        )
    report.epsilon_spent = float(engine.accountant.get_epsilon(delta=plan.delta))
    return report


def _private_epochs(
    dp_model: torch.nn.Module,
    dp_optimizer: Any,
    dp_loader: Any,
    builder: ExampleBuilder,
    rng: np.random.Generator,
    c: TwoTowerConfig,
    report: TrainReport,
    progress: Progress | None,
) -> None:
    for epoch in range(c.epochs):
        total, seen = 0.0, 0
        for (users,) in dp_loader:
            dp_optimizer.zero_grad()
            # Every Poisson batch goes through Opacus, an empty one too: its step is pure
            # noise, as the accounting assumes (skipping it would reveal the batch was empty).
            per_user = _loss(dp_model, c, builder.build(users, rng))
            loss = per_user.sum() / max(len(users), 1)  # the batch mean ("mean" reduction)
            loss.backward()  # type: ignore[no-untyped-call]
            dp_optimizer.step()
            total, seen = total + float(per_user.detach().sum()), seen + len(users)
            report.steps += 1
        report.losses.append(total / max(seen, 1))
        if progress:
            progress(epoch + 1, c.epochs, report.losses[-1])
