"""Training cost: DP-SGD against non-private (separate processes), and the ranker's share."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from atlasrec.evaluation import Interactions
from atlasrec.models.popularity import CONTRIBUTION_CAP, item_counts
from atlasrec.models.ranking.features import category_codes
from atlasrec.models.ranking.fit import train_with_ranker
from atlasrec.models.recommender import user_sequences
from atlasrec.models.training import DpPlan, dp_schedule, train
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import dp_config
from benchmarks.models.fixtures import DELTA, full_movielens
from benchmarks.stats import median
from privacy.accounting import calibrate_noise

COST_MODES = ("plain", "dp", "dp-secure")


def ranker_cost(
    data: Interactions, content: np.ndarray, categories: list[str | None], repeats: int
) -> dict[str, Any]:
    """Training time on all of `data`: two-tower alone vs with its ranker (as `train --no-dp`).

    Alternated `repeats` times; wall clock and this process's CPU time (less sensitive to
    other load on a shared machine), medians and ratios.
    """
    codes = category_codes(categories)
    config = TwoTowerConfig()
    times: dict[str, dict[str, list[float]]] = {
        n: {"wall_s": [], "cpu_s": []} for n in ("two_tower", "two_tower+ranker")
    }
    ranker: dict[str, Any] = {}
    for _ in range(repeats):
        for name in times:
            wall, cpu = time.perf_counter(), time.process_time()
            if name == "two_tower":
                train(content, user_sequences(data), config)
            else:
                ranker = train_with_ranker(content, codes, data, config).lineage
            times[name]["wall_s"].append(time.perf_counter() - wall)
            times[name]["cpu_s"].append(time.process_time() - cpu)
    medians = {n: {k: median(v) for k, v in t.items()} for n, t in times.items()}
    return {
        "runs": times,
        "median": medians,
        "ratio": {
            k: medians["two_tower+ranker"][k] / medians["two_tower"][k] for k in ("wall_s", "cpu_s")
        },
        "last_ranker_lineage": ranker,
    }


def cost_worker(mode: str, epochs: int) -> None:
    """Child process: train the DP architecture privately or not; print epoch times and RSS.

    Epoch 1's time includes the content-only pretraining; the median leaves it out.
    """
    data, content = full_movielens()
    sequences = user_sequences(data)
    config = replace(dp_config(TwoTowerConfig()), epochs=epochs)
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(_epoch: int, _epochs: int, _loss: float) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    plan = None
    if mode != "plain":
        rate, steps = dp_schedule(sum(1 for s in sequences if len(s)), config)
        sigma = calibrate_noise(8.0, DELTA, rate, steps)
        plan = DpPlan(sigma, rate, steps, config.max_grad_norm, DELTA, mode == "dp-secure")
    before = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: measure training alone
    last[0] = time.perf_counter()
    # the same architecture in both modes: the popularity prior on (here exact) counts
    counts = item_counts(sequences, data.n_items, CONTRIBUTION_CAP)
    train(content, sequences, config, dp=plan, popularity=counts, progress=tick)
    print(
        json.dumps(
            {
                "mode": mode,
                "epoch_seconds": times,
                "rss_before_mb": before,
                "train_peak_rss_mb": _rss_mb("VmHWM"),
            }
        )
    )


def _rss_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def cost(epochs: int, repeats: int = 3) -> dict[str, Any]:
    """Epoch time and peak memory: non-private, DP, and DP in secure mode, each in a process.

    The modes alternate `repeats` times (the machine is shared and noisy); each round's
    ratios compare median epoch times with its non-private run, and the results are the
    medians over rounds.
    """
    pairs: list[dict[str, Any]] = []
    for _ in range(repeats):
        results = {}
        for mode in COST_MODES:
            run = subprocess.run(  # noqa: S603 - our own module, fixed arguments
                [
                    sys.executable,
                    "-m",
                    "benchmarks.models",
                    "--cost-worker",
                    mode,
                    "--epochs",
                    str(epochs),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
        pairs.append(results)
    epoch = [{m: median(r["epoch_seconds"]) for m, r in p.items()} for p in pairs]
    return {
        "epoch_s_median": {m: median(e[m] for e in epoch) for m in COST_MODES},
        "ratio_to_plain": {m: median(e[m] / e["plain"] for e in epoch) for m in COST_MODES},
        "ratio_per_pair": [e["dp"] / e["plain"] for e in epoch],
        "secure_ratio_per_round": [e["dp-secure"] / e["plain"] for e in epoch],
        "rss_before_training_mb": {
            m: median(p[m]["rss_before_mb"] for p in pairs) for m in COST_MODES
        },
        "training_peak_rss_mb": {
            m: median(p[m]["train_peak_rss_mb"] for p in pairs) for m in COST_MODES
        },
        "epochs_timed": epochs,
        "repeats": repeats,
    }
