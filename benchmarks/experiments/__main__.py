"""`python -m benchmarks.experiments`: A/A false positives, and interleaving against A/B.

1. **A/A, simulated** (no server): the experiment analysis' decision rules looked at
   continuously.
   - A/B (`atlasrec.experiment_analysis`): per-user CTRs of equal arms, 2 and 3 arms at
     alpha / (arms - 1) per comparison, at least `MIN_USERS` per arm, looked at after every
     `--every` users. A false positive is any look at which any arm is called better or
     worse. Then 2 arms of heavy and light clickers analysed with CUPED
     (`atlasrec.evaluation.cuped`).
   - Interleaving: team-draft votes of two equally good rankers under position-biased clicks
     (`simulations.interleaving`), the sequential sign test after every request.
2. **The same pair, over HTTP**: a synthetic tenant (`simulations.clicks`) with a model that
   learned its users' tastes and one trained after `--noise-copies` (3) shuffled copies of
   the interactions were added (under users of their own, so that only what the model
   learns is noise). Clicks reward the favourite category and a hidden segment
   (`benchmarks.tastes`), which only a model that learned from the interactions knows.
   A real `atlasrec serve` process; the click simulator sends
   recommendations and clicks (first `--pre-requests` served by live alone: the A/B
   analysis' CUPED reads them), and the analysis looks after every `--check-every`
   requests (or `--look-share` of those sent so far, if more). For each repetition: an A/B
   experiment (50/50) of the pair, then an interleaving one; the requests each needed to
   decide (A/B: at the deciding look; interleaving: the request at which its evidence first
   crossed, which a look after every request would have stopped at), and whether it named
   the better model. Twice: with users alike in how much they click, and with heavy and
   light clickers (`--activity-shapes`; `ClickModel.activity_shape`).

JSON on stdout (and --out).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from atlasrec.datasets.synthetic import synthetic_truth
from atlasrec.evaluation.cuped import cuped
from atlasrec.evaluation.interleaving import first_decision
from atlasrec.evaluation.sequential import ALPHA, difference_cs, running_mean_cs
from atlasrec.experiment_analysis import MIN_USERS, analyse
from atlasrec.experiments import create, stop
from atlasrec.ingest import ingest
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from benchmarks.output import emit
from benchmarks.serving.server import free_port, server
from benchmarks.stamp import stamp
from benchmarks.tastes import (
    add_taste_arguments,
    add_traffic_arguments,
    click_model,
    served_order,
    sim_spec,
    tastes,
)
from simulations.clicks import (
    ClickModel,
    SimTenant,
    create_sim_tenant,
    shuffled_interactions,
    sim_folder,
    simulate,
)
from simulations.interleaving import team_draft_votes

TENANT = "sim-exp"
ACTOR = "bench:experiments"
BASE_CTR = 0.05


def user_values(rng: np.random.Generator, n: int, ctr: float | np.ndarray) -> np.ndarray:
    """Per-user CTRs: 1 to 5 requests of 10 shown items each (as `benchmarks.rollout`)."""
    shown = rng.integers(1, 6, n) * 10
    return rng.binomial(shown, ctr) / shown


def ab_false_positive(rng: np.random.Generator, arms: int, users: int, every: int) -> bool:
    """Whether an A/A A/B experiment of `arms` equal arms ever decides a comparison."""
    assigned = rng.integers(0, arms, users)
    values = user_values(rng, users, BASE_CTR)
    alpha = ALPHA / (arms - 1) / 2  # per arm's sequence: difference_cs splits its alpha
    bounds = [running_mean_cs(values[assigned == a], alpha) for a in range(arms)]
    seen = np.arange(every, users + 1, every)
    counts = [np.cumsum(assigned == a)[seen - 1] for a in range(arms)]
    for a in range(1, arms):
        n_a, n_0 = counts[a], counts[0]
        ok = np.minimum(n_a, n_0) >= MIN_USERS
        lower = bounds[a][0][n_a[ok] - 1] - bounds[0][1][n_0[ok] - 1]
        upper = bounds[a][1][n_a[ok] - 1] - bounds[0][0][n_0[ok] - 1]
        if ((lower > 0) | (upper < 0)).any():
            return True
    return False


def cuped_false_positive(rng: np.random.Generator, users: int, every: int) -> bool:
    """Whether an A/A A/B experiment analysed with CUPED ever decides.

    Heavy and light clickers (each user's CTR scaled by a Gamma(0.5, 2) draw), their CTR
    before the experiment known for 70% of them; CUPED's coefficient is estimated again at
    every look, as the analysis does.
    """
    assigned = rng.integers(0, 2, users)
    ctr = np.minimum(BASE_CTR * rng.gamma(0.5, 2.0, users), 1.0)
    values, prior = user_values(rng, users, ctr), user_values(rng, users, ctr)
    prior[rng.random(users) < 0.3] = np.nan  # new users: no covariate
    for n in range(every, users + 1, every):
        adjusted, _ = cuped(values[:n], prior[:n])
        arm, control = adjusted[assigned[:n] == 1], adjusted[assigned[:n] == 0]
        if min(len(arm), len(control)) < MIN_USERS:
            continue
        diff = difference_cs(arm, control, ALPHA)
        if diff.lower > 0 or diff.upper < 0:
            return True
    return False


def aa(args: argparse.Namespace) -> dict[str, Any]:
    """The A/A false-positive rates of both designs."""
    rng = np.random.default_rng(args.seed)
    out: dict[str, Any] = {"experiments": args.experiments, "alpha": ALPHA}
    for arms in (2, 3):
        hits = [
            ab_false_positive(rng, arms, args.users, args.every) for _ in range(args.experiments)
        ]
        out[f"ab_{arms}_arms"] = {
            "users": args.users,
            "look_every_users": args.every,
            "false_positive_rate": float(np.mean(hits)),
        }
    hits = [cuped_false_positive(rng, args.users, args.every) for _ in range(args.experiments)]
    out["ab_2_arms_cuped"] = {
        "users": args.users,
        "look_every_users": args.every,
        "false_positive_rate": float(np.mean(hits)),
    }
    runs = [
        first_decision(team_draft_votes(rng, args.requests, better_b=False))
        for _ in range(args.experiments)
    ]
    out["interleave"] = {
        "requests": args.requests,
        "look_every_requests": 1,
        "false_positive_rate": float(np.mean([r is not None for r in runs])),
    }
    return out


def pair(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """A/B and interleaving on the same pair of models, over HTTP, `--reps` times."""
    spec = sim_spec(args, TENANT, args.users_http, args.items, args.interactions)
    home = work / "home"
    platform = Platform(Settings(home=home))
    sim = create_sim_tenant(platform, spec, actor=ACTOR)
    config = TwoTowerConfig(epochs=args.epochs)
    good = train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config).model_version
    real = sim_folder(platform, TENANT) / "interactions.csv"
    noise = shuffled_interactions(real, work / "noise.csv", copies=args.noise_copies, seed=1)
    scope = platform.scope(TENANT)
    ingest(
        platform.plane(scope.region), scope, secret=platform.secret, actor=ACTOR, interactions=noise
    )
    poor = train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config).model_version
    env = {**os.environ, "ATLASREC_HOME": str(home), "ATLASREC_SERVING_RELOAD_S": "1"}
    port = free_port()
    truth = synthetic_truth(spec)
    out: dict[str, Any] = {
        "models": {"A": good, "B": poor},
        "served_orders": {
            arm: served_order(platform, TENANT, version, ACTOR)
            for arm, version in (("A", good), ("B", poor))
        },
        "tenant": {
            "users": args.users_http,
            "items": args.items,
            "interactions": args.interactions,
        },
        "noise_copies": args.noise_copies,
        "tastes": tastes(args),
        "check_every": args.check_every,
        "look_share": args.look_share,
        "pre_requests": args.pre_requests,
        "max_requests": args.max_requests,
    }
    with server(env, port, work / "serve.log", timeout_s=600):
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
        for shape in args.activity_shapes:
            model = click_model(args, truth, activity_shape=shape)
            if args.pre_requests:  # live's traffic before: CUPED's covariate
                simulate(
                    client,
                    sim.api_key,
                    model,
                    requests=args.pre_requests,
                    seed=10**9,
                    concurrency=args.concurrency,
                )
                time.sleep(args.settle_s)
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in args.kinds}
            for rep in range(args.reps):
                for kind in args.kinds:
                    runs[kind].append(
                        _decide(args, platform, client, sim, model, kind, good, poor, rep)
                    )
            medians = {k: _median(v) for k, v in runs.items()}
            ab, interleave = medians.get("ab"), medians.get("interleave")
            out[f"activity_shape_{shape:g}"] = {
                "runs": runs,
                "median_requests": medians,
                "ab_over_interleave": None if not (ab and interleave) else ab / interleave,
            }
    return out


def _decide(
    args: argparse.Namespace,
    platform: Platform,
    client: httpx.Client,
    sim: SimTenant,
    model: ClickModel,
    kind: str,
    good: str,
    poor: str,
    rep: int,
) -> dict[str, Any]:
    """Run one experiment of the pair (A = the good model) until decided or the cap."""
    made = create(platform, TENANT, arms=[good, poor], kind=kind, metric="ctr", actor=ACTOR)
    time.sleep(args.settle_s)  # the server's refresher picks the experiment up
    sent, began, ctr = 0, time.perf_counter(), {}
    decision = None
    while sent < args.max_requests:
        batch = _next_look(args, sent)
        report = simulate(
            client,
            sim.api_key,
            model,
            requests=batch,
            seed=rep * 10**6 + sent,
            concurrency=args.concurrency,
        )
        sent += batch
        ctr = {a: t["ctr"] for a, t in report.as_dict()["arms"].items()}
        time.sleep(args.settle_s)  # the server's consumers store requests and events
        decision = analyse(platform, TENANT)
        if decision.decision != "wait":
            break
    if decision is None or decision.decision == "wait":
        stop(platform, TENANT, made["id"], reason="undecided within --max-requests", actor=ACTOR)
    decided = decision is not None and decision.decision == "decided"
    numbers = {} if decision is None else decision.numbers
    return {
        "decided": decided,
        "right": decided and numbers.get("winner") == "A",
        "requests": numbers.get("first_decided_at") or sent,
        "requests_at_deciding_look": sent,
        "seconds": round(time.perf_counter() - began, 1),
        "last_ctr_by_arm": ctr,
        "numbers": numbers,
    }


def _next_look(args: argparse.Namespace, sent: int) -> int:
    """Requests until the next look: `--check-every`, or `--look-share` of those sent so far.

    Looks spaced in proportion bound how far past its crossing an A/B experiment is counted
    (by the share) while keeping long runs' waits for the consumers few.
    """
    return max(int(args.check_every), int(sent * args.look_share))


def _median(runs: list[dict[str, Any]]) -> float | None:
    right = [r["requests"] for r in runs if r["right"]]
    return float(np.median(right)) if len(right) == len(runs) else None


def main(argv: list[str] | None = None) -> None:
    """Run both parts; print the results as JSON (and write them with --out)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-experiments")
    parser.add_argument("--quick", action="store_true", help="fewer A/A runs, one repetition")
    parser.add_argument("--experiments", type=int, default=1_000)
    parser.add_argument("--users", type=int, default=4_000)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--users-http", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--interactions", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--noise-copies",
        type=int,
        default=3,
        help="shuffled copies of the interactions B is trained after (fewer: a subtler pair)",
    )
    parser.add_argument(
        "--activity-shapes",
        type=float,
        nargs="+",
        default=[0.0, 0.5],
        help="users' click propensity (simulations.clicks.ClickModel): 0 all alike",
    )
    parser.add_argument(
        "--pre-requests",
        type=int,
        default=4_000,
        help="requests served by live before the experiments (CUPED's pre-period)",
    )
    add_taste_arguments(parser)
    add_traffic_arguments(parser)
    parser.add_argument("--check-every", type=int, default=25)
    parser.add_argument(
        "--look-share",
        type=float,
        default=0.0,
        help="look after this share of the requests so far, when more than --check-every",
    )
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--settle-s", type=float, default=1.5)
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=["ab", "interleave"],
        default=["ab", "interleave"],
        help="the designs run on the pair, each repetition",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-http", action="store_true", help="only the A/A simulations")
    parser.add_argument("--skip-aa", action="store_true", help="only the pair over HTTP")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.experiments, args.reps, args.max_requests = 200, 1, 8_000
    results: dict[str, Any] = {**stamp()}
    if not args.skip_aa:
        results["aa"] = aa(args)
    if not args.skip_http:
        work = Path(tempfile.mkdtemp(prefix="atlasrec-bench-experiments-"))
        try:
            results["same_pair"] = pair(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    emit(results, args.out)


if __name__ == "__main__":
    main()
