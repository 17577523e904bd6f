"""`python -m benchmarks.rollout.loop`: the release loop end to end, driven by the click simulator.

One synthetic tenant (`simulations.clicks`) is served by a real `atlasrec serve` process;
the simulator sends it recommendations and its users' clicks over HTTP, and the analysis
(`atlasrec.rollout_analysis`, as beat or `atlasrec rollout check` runs it) looks after every
`--check-every` requests. Half of the users' taste interactions come from hidden segments
that no item text names, and clicks reward them (`benchmarks.tastes`): what a model learned
from the interactions, not what it reads off the text, decides its clicks. Three rollouts,
one after the other:

1. **better**: live was trained when the tenant had only its oldest `--early-share` of the
   interactions; the candidate once the rest arrived. Expected: promoted.
2. **broken** (trained on the same data): a candidate whose weights are damaged after its
   gates passed, so serving cannot load it. Expected: rolled back (`release.unservable`).
3. **worse**: trained after `--worse-copies` copies of the interactions with their users
   shuffled (popularity kept, tastes lost) were ingested under users of their own (so the
   simulated users' histories, which recommendations are made from, stay theirs): its data
   is mostly noise. Expected: rolled back (by the offline gate if its validation already
   shows it, else by the analysis).

(Copies of the users' own interactions make no better model: training and validation read
each user's distinct items, which copies leave as they were.)

For each: the decisions, the requests and the canary users each step took, the final
state. JSON on stdout (and --out).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from atlasrec.datasets.synthetic import synthetic_truth
from atlasrec.errors import RefusedError
from atlasrec.ingest import ingest
from atlasrec.models.bundle import KIND, WEIGHTS
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.releases import rollback, start, status
from atlasrec.rollout_analysis import analyse
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

TENANT = "sim-loop"
ACTOR = "bench:rollout"


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Set the tenant up, start its server, run the three rollouts."""
    spec = sim_spec(args, TENANT, args.users, args.items, args.interactions)
    home = work / "home"
    platform = Platform(Settings(home=home))
    sim = create_sim_tenant(platform, spec, actor=ACTOR, interactions=False)
    real = sim_folder(platform, TENANT) / "interactions.csv"
    config = TwoTowerConfig(epochs=args.epochs)
    early, rest = _split_by_time(real, work, args.early_share)
    _ingest(platform, early)
    train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config)  # live: little data
    env = {**os.environ, "ATLASREC_HOME": str(home), "ATLASREC_SERVING_RELOAD_S": "1"}
    port = free_port()
    model = click_model(args, synthetic_truth(spec))
    results: dict[str, Any] = {
        **stamp(),
        "tenant": {"users": args.users, "items": args.items, "interactions": args.interactions},
        "plan": {"canary_steps": args.steps, "min_requests": args.min_requests},
        "tastes": tastes(args),
        "early_share": args.early_share,
        "worse_copies": args.worse_copies,
        "check_every": args.check_every,
        "rollouts": {},
    }
    with server(env, port, work / "serve.log", timeout_s=600):
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
        _ingest(platform, rest)
        better = train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config)
        results["rollouts"]["better"] = _rollout(args, platform, client, sim, model, better)
        broken = train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config)
        results["rollouts"]["broken"] = _rollout(
            args, platform, client, sim, model, broken, damage=True
        )
        noise = shuffled_interactions(real, work / "noise.csv", copies=args.worse_copies, seed=2)
        _ingest(platform, noise)
        worse = train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config)
        results["rollouts"]["worse"] = _rollout(args, platform, client, sim, model, worse)
    return results


def _split_by_time(source: Path, work: Path, share: float) -> tuple[Path, Path]:
    """The oldest `share` of an interactions file's rows, and the rest, as two files."""
    with source.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    rows.sort(key=lambda r: int(r[2]))
    cut = int(len(rows) * share)
    parts = (work / "early.csv", rows[:cut]), (work / "rest.csv", rows[cut:])
    for path, part in parts:
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([header, *part])
    return parts[0][0], parts[1][0]


def _ingest(platform: Platform, interactions: Path) -> None:
    scope = platform.scope(TENANT)
    ingest(
        platform.plane(scope.region),
        scope,
        secret=platform.secret,
        actor=ACTOR,
        interactions=interactions,
    )


def _rollout(
    args: argparse.Namespace,
    platform: Platform,
    client: httpx.Client,
    sim: SimTenant,
    model: ClickModel,
    trained: Any,
    *,
    damage: bool = False,
) -> dict[str, Any]:
    """Start a rollout of `trained`, drive traffic and analyse until it is decided."""
    began = time.perf_counter()
    live = _live(platform)
    orders = {  # what each serves by default: a model below popularity serves popularity
        "candidate": served_order(platform, TENANT, trained.model_version, ACTOR),
        "live": None if live is None else served_order(platform, TENANT, live, ACTOR),
    }
    try:
        start(
            platform,
            TENANT,
            actor=ACTOR,
            version=trained.model_version,
            canary_steps=args.steps,
            min_requests=args.min_requests,
        )
    except RefusedError as refused:  # a gate rolled it back before any user saw it
        return {
            "version": trained.model_version,
            "served_orders": orders,
            "final": "rolled_back",
            "requests": 0,
            "seconds": round(time.perf_counter() - began, 1),
            "gate": str(refused),
        }
    if damage:
        scope = platform.scope(TENANT)
        artifacts = platform.plane(scope.region).artifacts
        path = artifacts.get(scope, KIND, trained.model_version, actor=ACTOR).path
        (path / WEIGHTS).write_bytes(b"damaged after the gates passed")
    time.sleep(args.settle_s)  # the server's refresher picks the release up
    steps: list[dict[str, Any]] = []
    sent = 0
    ctr: dict[str, list[dict[str, Any]]] = {}
    while sent < args.max_requests:
        report = simulate(
            client,
            sim.api_key,
            model,
            requests=args.check_every,
            seed=sent,
            concurrency=args.concurrency,
        )
        sent += args.check_every
        for version, tally in report.as_dict()["versions"].items():
            ctr.setdefault(version, []).append(tally)
        time.sleep(args.settle_s)  # the server's consumers store requests and events
        decision = analyse(platform, TENANT)
        if decision.decision in ("wait", "none"):
            continue
        steps.append(
            {
                "after_requests": sent,
                "decision": decision.decision,
                "reason": decision.reason,
                "numbers": decision.numbers,
            }
        )
        if decision.decision == "rollback" or _live(platform) == trained.model_version:
            break
        time.sleep(args.settle_s)
    rolled_back = bool(steps) and steps[-1]["decision"] == "rollback"
    final = "live" if _live(platform) == trained.model_version else "rolled_back"
    if final != "live" and not rolled_back:  # undecided: make way for the next rollout
        rollback(platform, TENANT, reason="undecided within --max-requests", actor=ACTOR)
        final = "undecided"
    return {
        "version": trained.model_version,
        "served_orders": orders,
        "final": final,
        "requests": sent,
        "seconds": round(time.perf_counter() - began, 1),
        "steps": steps,
        "ctr_by_version": {v: _ctr(t) for v, t in ctr.items()},
    }


def _live(platform: Platform) -> str | None:
    value = status(platform, TENANT, actor=ACTOR)["live"]
    return None if value is None else str(value)


def _ctr(tallies: list[dict[str, Any]]) -> dict[str, float]:
    clicks = sum(t["clicks"] for t in tallies)
    shown = sum(t["impressions"] for t in tallies)
    return {
        "requests": sum(t["requests"] for t in tallies),
        "ctr": clicks / shown if shown else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print the results as JSON (and write them with --out)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-rollout-loop")
    parser.add_argument("--quick", action="store_true", help="a smaller tenant and plan")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--early-share",
        type=float,
        default=0.05,
        help="share of the interactions (the oldest) live is trained on",
    )
    parser.add_argument(
        "--worse-copies", type=int, default=3, help="shuffled copies added before worse"
    )
    add_taste_arguments(parser)
    add_traffic_arguments(parser)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 25, 50, 100])
    parser.add_argument("--min-requests", type=int, default=200)
    parser.add_argument("--check-every", type=int, default=500)
    parser.add_argument("--max-requests", type=int, default=60_000)
    parser.add_argument("--settle-s", type=float, default=2.0)
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.items, args.interactions = 1_000, 1_000, 30_000
        args.steps = [25, 50, 100]
        args.min_requests, args.check_every, args.max_requests = 100, 300, 6_000
    work = Path(tempfile.mkdtemp(prefix="atlasrec-bench-rollout-loop-"))
    try:
        outcome = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(outcome, args.out)


if __name__ == "__main__":
    main()
