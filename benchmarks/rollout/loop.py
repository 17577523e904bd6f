"""`python -m benchmarks.rollout.loop`: the release loop end to end, driven by the click simulator.

One synthetic tenant (`simulations.clicks`) is served by a real `atlasrec serve` process;
the simulator sends it recommendations and its users' clicks over HTTP, and the analysis
(`atlasrec.rollout_analysis`, as beat or `atlasrec rollout check` runs it) looks after every
`--check-every` requests. Half of the users' taste interactions come from hidden segments
that no item text names, and clicks reward them (`benchmarks.tastes`): what a model learned
from the interactions, not what it reads off the text, decides its clicks. Three rollouts,
one after the other:

1. **better**: live was trained after `--noise-copies` shuffled copies of the interactions
   (users permuted: popularity kept, tastes lost) were ingested under users of their own
   (so the simulated users' histories, which recommendations are made from, stay theirs):
   its data was mostly noise. The candidate is trained once `--more-copies` copies of the
   users' own interactions arrived, so that their tastes outweigh the noise again.
   Expected: promoted.
2. **broken** (trained on the same data): a candidate whose weights are damaged after its
   gates passed, so serving cannot load it. Expected: rolled back (`release.unservable`).
3. **worse**: trained after `--worse-copies` more shuffled copies: noise outweighs the
   tastes again. Expected: rolled back (by the offline gate if its validation already
   shows it, else by the analysis).

For each: the decisions, the requests and the canary users each step took, the final
state. JSON on stdout (and --out).
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

from atlasrec.datasets.synthetic import SyntheticTenantSpec, synthetic_truth
from atlasrec.errors import RefusedError
from atlasrec.ingest import ingest
from atlasrec.models.bundle import KIND, WEIGHTS
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.releases import rollback, start, status
from atlasrec.rollout_analysis import analyse
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, SharingPolicy
from benchmarks.output import emit
from benchmarks.serving.server import free_port, server
from benchmarks.stamp import stamp
from benchmarks.tastes import add_taste_arguments, add_traffic_arguments, click_model, tastes
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
    spec = SyntheticTenantSpec(
        TENANT,
        Region.EU,
        SharingPolicy.SOLO,
        args.items,
        args.users,
        args.interactions,
        popularity_exponent=0.5,  # tastes, not popularity, decide what a user clicks
        hidden_share=args.hidden_share,
    )
    home = work / "home"
    platform = Platform(Settings(home=home))
    sim = create_sim_tenant(platform, spec, actor=ACTOR, interactions=False)
    real = sim_folder(platform, TENANT) / "interactions.csv"
    config = TwoTowerConfig(epochs=args.epochs)
    _ingest(platform, real)
    _ingest(platform, _noise(real, work / "noise.csv", args.noise_copies, seed=1))
    train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config)  # live: mostly noise
    env = {**os.environ, "ATLASREC_HOME": str(home), "ATLASREC_SERVING_RELOAD_S": "1"}
    port = free_port()
    model = click_model(args, synthetic_truth(spec))
    results: dict[str, Any] = {
        **stamp(),
        "tenant": {"users": args.users, "items": args.items, "interactions": args.interactions},
        "plan": {"canary_steps": args.steps, "min_requests": args.min_requests},
        "tastes": tastes(args),
        "copies": {
            "noise": args.noise_copies,
            "more": args.more_copies,
            "worse": args.worse_copies,
        },
        "check_every": args.check_every,
        "rollouts": {},
    }
    with server(env, port, work / "serve.log", timeout_s=600):
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
        more = work / "more.csv"  # more of the users' own tastes: the signal outweighs the noise
        _ingest(platform, shuffled_interactions(real, more, copies=args.more_copies, shuffle=False))
        better = train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config)
        results["rollouts"]["better"] = _rollout(args, platform, client, sim, model, better)
        broken = train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config)
        results["rollouts"]["broken"] = _rollout(
            args, platform, client, sim, model, broken, damage=True
        )
        _ingest(platform, _noise(real, work / "worse.csv", args.worse_copies, seed=2))
        worse = train_tenant(platform, TENANT, actor=ACTOR, no_dp=True, config=config)
        results["rollouts"]["worse"] = _rollout(args, platform, client, sim, model, worse)
    return results


def _noise(real: Path, out: Path, copies: int, seed: int) -> Path:
    """Shuffled copies of the interactions under users of their own: popularity, no taste."""
    return shuffled_interactions(real, out, copies=copies, seed=seed, strangers=True)


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
        "--noise-copies", type=int, default=3, help="shuffled copies live is trained after"
    )
    parser.add_argument(
        "--more-copies", type=int, default=3, help="copies of the real interactions added"
    )
    parser.add_argument(
        "--worse-copies", type=int, default=8, help="shuffled copies added before worse"
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
