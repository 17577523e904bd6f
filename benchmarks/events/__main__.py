"""`python -m benchmarks.events`: the interaction-events path, new code against baseline."""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.events import consume, faults, freshness, ingest, load
from benchmarks.events.config import (
    BASELINE_COMMIT,
    BODIES,
    REDIS_BASE,
    REDIS_DBS,
    REDIS_INNER_DBS,
)
from benchmarks.events.fixtures import (
    catalog,
    create_tenant,
    event_requests,
    flush,
    item_ids,
    prepare,
)
from benchmarks.events.processes import Home, Proc, Variant, consumer, free_port, nats, server
from benchmarks.events.report import capacity, report
from benchmarks.serving.server import cpu_seconds
from benchmarks.stamp import stamp

REPO = Path(__file__).resolve().parents[2]


class Bench:
    """The run's folder, catalog, NATS server and variants; makes homes and servers."""

    def __init__(self, work: Path, stack: ExitStack, baseline: Path) -> None:
        self.work, self.stack = work, stack
        self.items_csv, self.interactions_csv = catalog(work / "catalog")
        self.items = item_ids(self.items_csv)
        self.nats = nats(work / "nats", free_port())
        stack.callback(self.nats.stop)
        nats_url = f"nats://127.0.0.1:{self.nats.argv[4]}"
        self.jetstream = Variant("new-jetstream", REPO, nats_url)
        self.embedded = Variant("new-embedded", REPO)
        self.baseline = Variant("baseline", baseline, baseline=True)
        self.variants = [self.jetstream, self.embedded, self.baseline]
        self._homes = 0

    def home(self, variant: Variant, section: str, db: int, *, tenant: bool = True) -> Home:
        """A fresh home for `variant` in `section` on a flushed Redis db (tenant ready)."""
        self._homes += 1
        redis_url = f"{REDIS_BASE}/{db}"
        flush(redis_url)
        self.stack.callback(flush, redis_url)
        root = f"{section}{self._homes}"
        home = Home(variant, self.work / "homes" / f"{root}-{variant.name}", redis_url, root)
        if tenant:
            return prepare(home, self.items_csv, self.interactions_csv)
        home.path.mkdir(parents=True)
        return home

    def serve(
        self, home: Home, *, serving_consumers: bool = False, wait: bool = True
    ) -> tuple[Proc, int]:
        """`atlasrec serve` of the home, started (healthy unless not `wait`); its port."""
        port = free_port()
        log = self.work / f"{home.root}-{home.variant.name}-server.log"
        proc = server(home, port, log, serving_consumers=serving_consumers).launch()
        self.stack.callback(proc.stop)
        return (proc.ready(port) if wait else proc), port


@contextmanager
def baseline_checkout(path: Path | None) -> Iterator[Path]:
    """The baseline's code: `path`, or a temporary detached worktree of BASELINE_COMMIT."""
    if path is not None:
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix="atlasrec-bench-base-")) / "base"
    git = ["git", "-C", str(REPO), "worktree"]
    subprocess.run([*git, "add", "--detach", str(folder), BASELINE_COMMIT], check=True)  # noqa: S603
    try:
        yield folder
    finally:
        subprocess.run([*git, "remove", "--force", str(folder)], check=False)  # noqa: S603


@dataclass
class Served:
    """A home with its running server."""

    home: Home
    proc: Proc
    port: int


class Fleet:
    """The servers the sections share: one per variant (consumers apart).

    And the setups with the consumers in the server, started with the others and idle until
    the freshness probes.
    """

    def __init__(self, bench: Bench, in_server: list[Variant]) -> None:
        homes, inner, launched, launched_inner = [], [], [], []
        for variant, db in zip(bench.variants, REDIS_DBS, strict=False):
            homes.append(bench.home(variant, "srv", db))
            launched.append(bench.serve(homes[-1], wait=False))  # starts while the next is set up
        for variant, db in zip(in_server, REDIS_INNER_DBS, strict=False):
            inner.append(bench.home(variant, "inner", db))
            launched_inner.append(bench.serve(inner[-1], serving_consumers=True, wait=False))
        self.apart = {
            h.variant.name: Served(h, proc.ready(port), port)
            for h, (proc, port) in zip(homes, launched, strict=True)
        }
        self.inner = {
            h.variant.name: Served(h, proc.ready(port), port)
            for h, (proc, port) in zip(inner, launched_inner, strict=True)
        }
        for name, served in {**self.apart, **self.inner}.items():
            print(f"  {name}: healthy after {served.proc.started_s:.1f} s", flush=True)


def acknowledgements(bench: Bench, fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    """1 + 6: events acknowledged per serving process, each variant its own server."""
    print("acknowledgements per serving process ...", flush=True)
    targets = [
        load.Target(
            name,
            s.port,
            s.proc.pid,
            {
                batch: event_requests(s.port, s.home.api_key, bench.items, batch, BODIES, seed=n)
                for batch in (1, 50)
            },
        )
        for n, (name, s) in enumerate(fleet.apart.items())
    ]
    for target in targets:  # warm up: the tenant loaded, the key cached, the log connected
        load.one(target, load.Shape("warm", 50, 1_000.0), 1.0)
    nats_cpu = cpu_seconds(bench.nats.pid)
    shapes = [
        load.Shape("b50_rate", 50, args.rate),
        load.Shape("b50_sat", 50, None, args.connections),
        load.Shape("b1_rate", 1, args.rate_single),
        load.Shape("b1_sat", 1, None, args.connections),
    ]
    results = load.interleaved(targets, shapes, args.repeats, args.duration)
    return {
        "shapes": {
            s.name: {"batch": s.batch, "events_per_s": s.events_per_s, "connections": s.connections}
            for s in shapes
        },
        "duration_s": args.duration,
        "repeats": args.repeats,
        "variants": results,
        "nats_cpu_s_during_all_runs": round(cpu_seconds(bench.nats.pid) - nats_cpu, 1),
        "server_peak_rss_mb": {name: s.proc.peak_rss_mb() for name, s in fleet.apart.items()},
        "server_ready_s": {
            name: round(s.proc.started_s, 1) for name, s in {**fleet.apart, **fleet.inner}.items()
        },
    }


def freshnesses(bench: Bench, fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    """4 + 6: from 202 to a recommendation reflecting the event, and to the offline store."""
    print(f"freshness, {args.probes} probes per setup ...", flush=True)
    out: dict[str, Any] = {}
    jet = fleet.apart[bench.jetstream.name]
    apart = consumer(jet.home, bench.work / f"{jet.home.root}-consumer.log").launch()
    out["backlog_of_the_ack_runs"] = {
        n: consume.caught_up(jet.home, n) for n in ("online", "offline")
    }
    print(
        f"  consumers apart drained the ack runs' backlog: {out['backlog_of_the_ack_runs']}",
        flush=True,
    )
    setups: list[tuple[str, Served, bool]] = [
        ("new-jetstream, consumers in their own process", jet, True),
        *((f"{name}, consumers in the server", s, True) for name, s in fleet.inner.items()),
        ("baseline", fleet.apart[bench.baseline.name], False),
    ]
    for name, served, offline in setups:
        result = freshness.probes(
            served.home, served.port, bench.items, args.probes, offline=offline
        )
        result["server_peak_rss_mb"] = served.proc.peak_rss_mb()
        if served is jet:
            result["consumer_peak_rss_mb"] = apart.peak_rss_mb()
        out[name] = result
        print(f"  {name}: {json.dumps(result)}", flush=True)
    apart.stop()
    for served in fleet.inner.values():
        served.proc.stop()
    return out


def locked(bench: Bench, fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    """5 + 6: the region database locked for `args.lock_s` under steady load."""
    print(f"region database locked for {args.lock_s:g} s under load ...", flush=True)
    out = {}
    for name, served in fleet.apart.items():
        apart = None
        if not served.home.variant.baseline:
            log = bench.work / f"{served.home.root}-offline.log"
            apart = consumer(served.home, log, "offline").launch()
            backlog = consume.caught_up(served.home)
            print(f"  {name}: offline consumer drained the backlog: {backlog}", flush=True)
        result = faults.locked_database(
            served.home,
            served.proc,
            served.port,
            args.lock_rate,
            args.lock_margin_s,
            args.lock_s,
            args.lock_margin_s * 2,
        )
        if apart is not None:
            result["consumer_peak_rss_mb"] = apart.peak_rss_mb()
            apart.stop()
        served.proc.stop()
        out[name] = result
        print(f"  {name}: {json.dumps(result)}", flush=True)
    return out


def consumers(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """2 + 6: the offline consumer draining a pre-filled log (JetStream, embedded)."""
    print(f"offline consumer draining {args.prefill:,} events ...", flush=True)
    out = {}
    for variant in bench.variants:
        if variant.baseline:
            continue
        home = bench.home(variant, "drain", REDIS_DBS[0], tenant=False)
        home.api_key = create_tenant(home)
        out[variant.name] = consume.consumer_throughput(
            home, bench.items, args.prefill, startup=not args.quick
        )
    return out


def ingests(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """3 + 6: `atlasrec ingest` of synthetic interactions, new code against baseline."""
    print("CSV ingest ...", flush=True)
    homes = [
        bench.home(bench.jetstream, "ingest", REDIS_DBS[0], tenant=False),
        bench.home(bench.baseline, "ingest", REDIS_DBS[2], tenant=False),
    ]
    return ingest.ingest_runs(
        homes,
        bench.work / "ingest",
        args.ingest_sizes,
        args.ingest_items,
        args.ingest_repeats,
    )


SERVED = {"ack": acknowledgements, "freshness": freshnesses, "locked_db": locked}
"""The sections on the shared servers, in this order (the database lock stops them)."""
ALONE = {"consumer": consumers, "ingest": ingests}
SECTIONS = [*SERVED, *ALONE]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every section (or those of --only), in one temporary folder; the results."""
    results: dict[str, Any] = {}
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="atlasrec-bench-events-") as tmp,
        baseline_checkout(args.baseline) as base,
        ExitStack() as stack,
    ):
        bench = Bench(Path(tmp), stack, base)
        if args.quick:  # under 2 minutes: JetStream (production's log) against baseline only
            bench.variants.remove(bench.embedded)
        results["baseline_code"] = {"commit": BASELINE_COMMIT, "checkout": str(base)}
        chosen = [name for name in SECTIONS if not args.only or name in args.only]
        if any(name in SERVED for name in chosen):
            print("starting the servers ...", flush=True)
            began = time.perf_counter()
            in_server = [] if args.quick else [bench.jetstream, bench.embedded]
            fleet = Fleet(bench, in_server if "freshness" in chosen else [])
            results["servers_setup_s"] = round(time.perf_counter() - began, 1)
        for name in chosen:
            began = time.perf_counter()
            if name in SERVED:
                results[name] = SERVED[name](bench, fleet, args)
            else:
                results[name] = ALONE[name](bench, args)
            results[name]["section_s"] = round(time.perf_counter() - began, 1)
    results["capacity"] = capacity(results)
    results["total_s"] = round(time.perf_counter() - started, 1)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; `--quick` shrinks every size (under 2 minutes)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-events")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="these sections only")
    parser.add_argument(
        "--baseline",
        type=Path,
        help=f"a checkout of {BASELINE_COMMIT} (default: a temporary worktree)",
    )
    parser.add_argument(
        "--rate", type=float, default=5_000.0, help="offered events/s, batches of 50"
    )
    parser.add_argument(
        "--rate-single", type=float, default=250.0, help="offered events/s, 1 a request"
    )
    parser.add_argument("--connections", type=int, default=16, help="closed-loop connections")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--prefill", type=int, default=500_000, help="events drained by the consumer"
    )
    parser.add_argument("--ingest-sizes", type=int, nargs="+", default=[1_000_000, 2_000_000])
    parser.add_argument("--ingest-repeats", type=int, default=3, help="runs per size")
    parser.add_argument("--ingest-items", type=int, default=20_000, help="catalog of ingest runs")
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--lock-s", type=float, default=40.0)
    parser.add_argument("--lock-margin-s", type=float, default=5.0, help="load before the lock")
    parser.add_argument("--lock-rate", type=float, default=2_500.0, help="events/s during the lock")
    args = parser.parse_args(argv)
    if args.quick:
        quick = {
            "duration": 1.0,
            "repeats": 1,
            "prefill": 10_000,
            "ingest_sizes": [20_000],
            "ingest_items": 2_000,
            "ingest_repeats": 1,
            "probes": 5,
            "lock_s": 2.0,
            "lock_margin_s": 0.5,
        }
        args = argparse.Namespace(**{**vars(args), **quick})
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, write JSON to --out, print a summary."""
    args = parse_args(argv)
    results: dict[str, Any] = {
        **stamp(),
        "quick": args.quick,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "quick")},
    }
    results.update(run(args))
    text = json.dumps(results, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    print(report(results))


if __name__ == "__main__":
    main()
