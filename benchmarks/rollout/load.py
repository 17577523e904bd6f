"""`python -m benchmarks.rollout.load`: release transitions and shadow traffic under load.

One synthetic tenant served by a real `atlasrec serve` process (`--workers`, reloading
every second), open-loop load at `--rate` requests per second from known users (latency
counted from when each request was due, so nothing queued is hidden):

1. **Shadow cost**: `--repeats` alternations of live alone and a release in shadow at
   `--shadow` percent, `--duration` seconds each; p99 of each, and the median ratio.
2. **Transitions under load**: one continuous run while a rollout is started (shadow),
   advanced through every canary step (5, 25, 50, 100%), promoted, and then a second one
   started and rolled back, `--step-s` seconds apart. Every request that is not a 200
   counts as failed; the target is none.

JSON on stdout (and --out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from atlasrec.datasets.synthetic import SyntheticTenantSpec, synthetic_truth
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.releases import advance, rollback, start, status
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, SharingPolicy
from benchmarks.output import emit
from benchmarks.serving.fixtures import raw_post
from benchmarks.serving.load import Sample, open_loop, summarise
from benchmarks.serving.server import free_port, server, settle
from benchmarks.stamp import stamp
from simulations.clicks import create_sim_tenant

TENANT = "sim-load"
ACTOR = "bench:rollout.load"
STEPS = [5, 25, 50, 100]


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Set the tenant up with its candidates, start its server, run both parts."""
    spec = SyntheticTenantSpec(
        TENANT, Region.EU, SharingPolicy.SOLO, args.items, args.users, args.interactions
    )
    home = work / "home"
    platform = Platform(Settings(home=home))
    sim = create_sim_tenant(platform, spec, actor=ACTOR)
    config = TwoTowerConfig(epochs=args.epochs)
    versions = [
        train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config).model_version
        for _ in range(args.repeats + 3)  # live, one per shadow repeat, promoted, rolled back
    ]
    env = {**os.environ, "ATLASREC_HOME": str(home), "ATLASREC_SERVING_RELOAD_S": "1"}
    port = free_port()
    users = synthetic_truth(spec).user_ids
    rng = np.random.default_rng(0)
    bodies = [
        raw_post(port, "/v1/recommendations", sim.api_key, {"user_id": users[u], "k": 10})
        for u in rng.integers(len(users), size=4_000)
    ]
    out: dict[str, Any] = {
        **stamp(),
        "tenant": {"users": args.users, "items": args.items, "interactions": args.interactions},
        "workers": args.workers,
        "rate": args.rate,
    }
    with server(env, port, work / "serve.log", timeout_s=600, workers=args.workers):
        _load(port, bodies, args.rate, 5.0)  # warm-up
        out["shadow"] = _shadow_cost(args, platform, port, bodies, versions[1 : 1 + args.repeats])
        out["transitions"] = _transitions(args, platform, port, bodies, versions[-2:])
    return out


def _load(
    port: int, bodies: list[bytes], rate: float, seconds: float
) -> tuple[list[Sample], float]:
    return asyncio.run(open_loop(port, bodies, rate, seconds, timed=True))


def _shadow_cost(
    args: argparse.Namespace,
    platform: Platform,
    port: int,
    bodies: list[bytes],
    candidates: list[str],
) -> dict[str, Any]:
    """Alternate live alone and live with a release in shadow; each run's summary."""
    runs: dict[str, list[dict[str, Any]]] = {"live": [], "shadow": []}
    for version in candidates:
        settle(port)
        runs["live"].append(summarise(*_load(port, bodies, args.rate, args.duration), args.rate))
        start(platform, TENANT, actor=ACTOR, version=version, shadow_percent=args.shadow)
        time.sleep(2.5)  # the refresher loads the candidate
        settle(port)
        runs["shadow"].append(summarise(*_load(port, bodies, args.rate, args.duration), args.rate))
        rollback(platform, TENANT, reason="bench: next repetition", actor=ACTOR)
        time.sleep(2.5)
    live = float(np.median([r["p99_ms"] for r in runs["live"]]))
    shadow = float(np.median([r["p99_ms"] for r in runs["shadow"]]))
    return {
        "shadow_percent": args.shadow,
        "seconds_each": args.duration,
        "runs": runs,
        "median_p99_ms": {"live": live, "shadow": shadow},
        "p99_ratio": shadow / live,
        "errors": sum(r["errors"] for rs in runs.values() for r in rs),
    }


def _transitions(
    args: argparse.Namespace, platform: Platform, port: int, bodies: list[bytes], pair: list[str]
) -> dict[str, Any]:
    """One load run while a rollout goes shadow -> every step -> live, then one rolls back."""
    promoted, dropped = pair
    plan: list[tuple[str, Any]] = [
        (
            "start (shadow 10%)",
            lambda: start(
                platform,
                TENANT,
                actor=ACTOR,
                version=promoted,
                shadow_percent=10,
                canary_steps=STEPS,
            ),
        ),
        *[
            (
                f"advance to canary {s}%",
                lambda: advance(platform, TENANT, reason="bench", actor=ACTOR),
            )
            for s in STEPS
        ],
        (
            "promote (past the last step)",
            lambda: advance(platform, TENANT, reason="bench", actor=ACTOR),
        ),
        (
            "start (canary 5%)",
            lambda: start(platform, TENANT, actor=ACTOR, version=dropped, canary_steps=STEPS),
        ),
        ("advance to canary 25%", lambda: advance(platform, TENANT, reason="bench", actor=ACTOR)),
        ("rollback", lambda: rollback(platform, TENANT, reason="bench", actor=ACTOR)),
    ]
    seconds = args.step_s * (len(plan) + 1)
    result: dict[str, Any] = {}

    def load() -> None:
        result["samples"], result["elapsed"] = _load(port, bodies, args.rate, seconds)

    settle(port)
    loader = threading.Thread(target=load)
    loader.start()
    done: list[dict[str, Any]] = []
    for name, act in plan:
        time.sleep(args.step_s)
        act()
        done.append({"at_s": round(args.step_s * (len(done) + 1), 1), "transition": name})
    loader.join()
    summary = summarise(result["samples"], result["elapsed"], args.rate)
    return {
        "seconds": seconds,
        "transitions": done,
        "live_after": status(platform, TENANT, actor=ACTOR)["live"],
        "expected_live": promoted,
        **summary,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print the results as JSON (and write them with --out)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-rollout-load")
    parser.add_argument("--quick", action="store_true", help="one repetition, shorter runs")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--interactions", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--shadow", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step-s", type=float, default=4.0)
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.duration, args.step_s = 1, 10.0, 3.0
    work = Path(tempfile.mkdtemp(prefix="atlasrec-bench-rollout-load-"))
    try:
        outcome = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(outcome, args.out)


if __name__ == "__main__":
    main()
