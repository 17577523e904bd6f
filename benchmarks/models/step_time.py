"""Seconds per non-DP training step: the item tower per row against once per distinct item.

`python -m benchmarks.models.step_time [--users N] [--steps S] [--rounds R]`: one synthetic
retail tenant (`default_order.synthetic`, 3,000 items), the default `TwoTowerConfig`; each
round times `S` steps (a step: build a batch, forward, backward, Adam) with
`TwoTower.shared_items` off (one item-tower row per history and candidate slot, what DP
training needs) and then on (what non-DP training runs), alternating so the shared machine's
load falls on both alike. Medians over rounds and their ratio; JSON on stdout (and `--out`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlasrec.models.recommender import user_sequences
from atlasrec.models.training import ExampleBuilder
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig, sampled_softmax_loss
from benchmarks.models.default_order import synthetic
from benchmarks.output import emit
from benchmarks.stamp import stamp
from benchmarks.stats import median, ratio


def seconds_per_step(
    model: TwoTower, builder: ExampleBuilder, n_users: int, steps: int, shared: bool
) -> float:
    """Mean seconds of `steps` training steps with `shared_items` set to `shared`."""
    c = model.config
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=c.lr)
    rng = np.random.default_rng(0)
    model.shared_items = shared
    started = time.perf_counter()
    for _ in range(steps):
        batch = builder.build(torch.from_numpy(rng.choice(n_users, c.batch_size)), rng)
        history, h_mask, candidates, p_mask, n_mask = batch
        loss = sampled_softmax_loss(model(history, h_mask, candidates), c.positives, p_mask, n_mask)
        optimizer.zero_grad()
        loss.mean().backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    model.shared_items = False
    return (time.perf_counter() - started) / steps


def step_time(n_users: int, steps: int, rounds: int) -> dict[str, Any]:
    """The study (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        ds = synthetic(f"synthetic-{n_users}", n_users, Path(tmp))
    config = TwoTowerConfig()
    model = TwoTower(ds.content, config)
    builder = ExampleBuilder(user_sequences(ds.data), model.n_items, config)
    per_row, shared = [], []
    for _ in range(rounds):
        per_row.append(seconds_per_step(model, builder, ds.data.n_users, steps, shared=False))
        shared.append(seconds_per_step(model, builder, ds.data.n_users, steps, shared=True))
    return {
        **stamp(),
        "users": ds.data.n_users,
        "items": ds.data.n_items,
        "batch_size": config.batch_size,
        "steps_per_round": steps,
        "per_row_s": round(median(per_row), 4),
        "once_per_item_s": round(median(shared), 4),
        "per_row_runs_s": [round(s, 4) for s in per_row],
        "once_per_item_runs_s": [round(s, 4) for s in shared],
        "speedup": ratio(median(per_row), median(shared)),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the study and print its JSON."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-step-time")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    emit(step_time(args.users, args.steps, args.rounds), args.out)


if __name__ == "__main__":
    main()
