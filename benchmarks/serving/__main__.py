"""`python -m benchmarks.serving`: set up, serve, load, profile; JSON to --out, a summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from operator import attrgetter
from pathlib import Path
from typing import Any

from atlasrec.platform import Platform
from atlasrec.settings import get_settings
from benchmarks.serving.config import (
    BODIES,
    CONCURRENCY,
    ML_EPOCHS,
    RATES,
    REDIS_URL,
    REGION,
    TARGET_RATE,
)
from benchmarks.serving.fixtures import (
    TenantSetup,
    flush_redis,
    raw_get,
    raw_post,
    request_bodies,
    setup_movielens,
    setup_synthetic,
)
from benchmarks.serving.load import closed_loop, measure, run_wrk, wrk_script
from benchmarks.serving.profile import compare_intents, profile_tenant, py_spy_profile
from benchmarks.serving.report import report
from benchmarks.serving.server import free_port, server
from benchmarks.stamp import stamp
from benchmarks.stats import median_of

Bodies = dict[str, list[dict[str, Any]]]
Targets = dict[str, tuple[list[bytes], bool]]

NOTE = (
    "synthetic tenant: item embeddings are deterministic pseudo-random unit vectors "
    "written into item_embeddings (not MiniLM); the tenant is untrained "
    "(content-embedding path). Client and server share the machine's cores."
)


@contextmanager
def bench_home() -> Iterator[Path]:
    """A temporary ATLASREC_HOME on the benchmark's (flushed) Redis db; all undone after."""
    home = Path(tempfile.mkdtemp(prefix="atlasrec-bench-serving-"))
    env_keys = ("ATLASREC_HOME", "ATLASREC_REDIS_URL", "ATLASREC_REGION")
    saved = {k: os.environ.get(k) for k in env_keys}
    os.environ["ATLASREC_HOME"] = str(home / "home")
    os.environ["ATLASREC_REDIS_URL"] = REDIS_URL
    os.environ.pop("ATLASREC_REGION", None)
    get_settings.cache_clear()
    try:
        flush_redis()
        yield home
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
        try:
            flush_redis()
        finally:
            shutil.rmtree(home, ignore_errors=True)


def setup_tenants(platform: Platform, home: Path, args: argparse.Namespace) -> list[TenantSetup]:
    """The trained MovieLens tenant and the synthetic one, ingested (and described)."""
    print("setting up tenants ...", flush=True)
    tenants = [
        setup_movielens(platform, home / "data", args.epochs),
        setup_synthetic(platform, home / "data", args.users, args.interactions),
    ]
    for t in tenants:
        print(
            f"  {t.tenant_id}: {t.n_items} items, {t.n_users} users, "
            f"{t.n_interactions} interactions, setup {t.setup_s}",
            flush=True,
        )
    return tenants


def targets(port: int, tenants: list[TenantSetup], bodies: Bodies) -> Targets:
    """Raw requests per target (`healthz`, then each tenant), and whether they are timed."""
    out: Targets = {"healthz": ([raw_get(port, "/healthz")], False)}
    for t in tenants:
        out[t.tenant_id] = (
            [raw_post(port, "/v1/recommendations", t.api_key, b) for b in bodies[t.tenant_id]],
            True,
        )
    return out


def wrk_runs(
    home: Path, port: int, tenants: list[TenantSetup], bodies: Bodies, args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    """Wrk's closed loop per tenant and on /healthz, `args.repeats` times (if wrk exists)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    if not shutil.which("wrk"):
        return runs
    print("wrk closed loop ...", flush=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(args.repeats):
        for t in tenants:
            lua = home / f"{t.tenant_id}.lua"
            script = wrk_script(lua, t.api_key, bodies[t.tenant_id][:500])
            runs.setdefault(t.tenant_id, []).append(
                run_wrk(url, script, args.concurrency, args.wrk_duration)
            )
        runs.setdefault("healthz", []).append(
            run_wrk(f"{url}/healthz", None, args.concurrency, args.wrk_duration)
        )
    for name, done in runs.items():
        print(f"  {name}: {[r.get('requests_per_s') for r in done]} req/s", flush=True)
    return runs


def under_load(
    home: Path, tenants: list[TenantSetup], bodies: Bodies, args: argparse.Namespace
) -> dict[str, Any]:
    """Start the server; warm up, the load repetitions, wrk and py-spy against it."""
    port = free_port()
    env = {**os.environ, "ATLASREC_REGION": REGION}
    env.update(dict(item.split("=", 1) for item in args.server_env))
    aims = targets(port, tenants, bodies)
    out: dict[str, Any] = {}
    print(f"starting the server on port {port} ...", flush=True)
    with server(env, port, home / "server.log", args.start_timeout, args.workers) as (ready, pid):
        print(f"  healthy after {ready:.1f} s", flush=True)
        for requests, timed in aims.values():  # warm up
            asyncio.run(closed_loop(port, requests, 4, 3.0, timed))
        repeats = []
        for rep in range(args.repeats):
            print(f"repetition {rep + 1}/{args.repeats}", flush=True)
            repeats.append(measure(port, pid, aims, args.rates, args.duration, args.concurrency))
        wrk = wrk_runs(home, port, tenants, bodies, args)
        if args.py_spy:
            print("py-spy on the server under closed-loop load ...", flush=True)
            out["server_profile"] = {
                t.tenant_id: py_spy_profile(
                    args.py_spy, pid, port, aims[t.tenant_id][0], args.concurrency, 10
                )
                for t in tenants
            }
    out["server_ready_s"] = round(ready, 1)
    out["repeats"], out["wrk"] = repeats, wrk
    return out


_SUMMARY = ("kind", "items", "users", "interactions", "model_version", "setup_s")
_summary = attrgetter("kind", "n_items", "n_users", "n_interactions", "model_version", "setup_s")


def tenant_summary(t: TenantSetup) -> dict[str, Any]:
    """What a benchmark tenant holds, and how long its setup took."""
    return dict(zip(_SUMMARY, _summary(t), strict=True))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, serve, load, profile; the results."""
    started = time.perf_counter()
    with bench_home() as home:
        platform = Platform()
        tenants = setup_tenants(platform, home, args)
        bodies = {t.tenant_id: request_bodies(t, BODIES, seed=n) for n, t in enumerate(tenants)}
        loaded = under_load(home, tenants, bodies, args)
        results: dict[str, Any] = {
            k: loaded[k] for k in ("server_profile", "server_ready_s") if k in loaded
        }
        results["tenants"] = {t.tenant_id: tenant_summary(t) for t in tenants}
        results["repeats"] = loaded["repeats"]
        results["median"] = median_of(loaded["repeats"])
        results["wrk"] = {n: {"runs": r, "median": median_of(r)} for n, r in loaded["wrk"].items()}
        print("profiling in-process ...", flush=True)
        results["profile"] = {
            t.tenant_id: profile_tenant(platform, t.tenant_id, bodies[t.tenant_id], args.profile_n)
            for t in tenants
        }
        ml = tenants[0].tenant_id  # the trained tenant: the one with neighbours
        results["intents"] = {ml: compare_intents(platform, ml, bodies[ml], args.profile_n)}
        platform.close()
    results["total_s"] = round(time.perf_counter() - started, 1)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; `--quick` replaces the load's shape with a short one."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-serving")
    parser.add_argument("--quick", action="store_true", help="5 s runs at 300 req/s, once")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load run")
    parser.add_argument("--wrk-duration", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=ML_EPOCHS)
    parser.add_argument("--users", type=int, default=20_000, help="synthetic tenant users")
    parser.add_argument("--interactions", type=int, default=300_000)
    parser.add_argument("--profile-n", type=int, default=3_000)
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--workers", type=int, default=1, help="atlasrec serve --workers")
    parser.add_argument(
        "--server-env", nargs="*", default=[], metavar="KEY=VALUE", help="extra server env"
    )
    parser.add_argument(
        "--py-spy",
        default=shutil.which("py-spy"),
        help="py-spy executable: sample the server under load (skipped when absent)",
    )
    args = parser.parse_args(argv)
    if not args.quick:
        return args
    quick = {
        "rates": [TARGET_RATE],
        "duration": 5.0,
        "wrk_duration": 5,
        "repeats": 1,
        "interactions": min(args.interactions, 100_000),
        "users": min(args.users, 10_000),
        "profile_n": 1_000,
    }
    return argparse.Namespace(**{**vars(args), **quick})


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, write JSON to --out, print a summary."""
    args = parse_args(argv)
    results = {
        **stamp(),
        "quick": args.quick,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "quick")},
        "note": NOTE,
    }
    results.update(run(args))
    text = json.dumps(results, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    print(report(results))


if __name__ == "__main__":
    main()
