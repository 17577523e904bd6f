"""`atlasrec events ...`: the region's event log, its consumers and the offline store."""

from __future__ import annotations

from typing import Annotated

import typer

from atlasrec.cli.options import JsonOpt, RegionOpt, TenantOpt, actor, group, open_platform
from atlasrec.cli.output import print_json
from atlasrec.pipelines.events import CONSUMERS, consume, event_stats, replay
from atlasrec.tenancy import parse_region

app = group("The region's event log, its consumers and the offline store.")

ConsumerOpt = Annotated[
    list[str] | None,
    typer.Option("--consumer", help="online, offline, requests or catalog (default: all four)"),
]


@app.command("stats")
def stats(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Events stored for a tenant, and each consumer's lag."""
    built = event_stats(open_platform(), tenant, actor=actor())
    if as_json:
        print_json(built)
        return
    lags = ", ".join(f"{n} {lag}" for n, lag in built["consumers"].items()) or "none"
    typer.echo(
        f"{tenant}@{built['region']}: {built['stored']} stored "
        f"({built['offline']['rows']} in {built['offline']['files']} Parquet files, "
        f"{built['offline']['ingested']} of them from ingested files); "
        f"{built['log']['events']} in the log; "
        f"consumer lag: {lags}"
    )


@app.command("consume")
def run(
    region: RegionOpt,
    consumer: ConsumerOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Stop when nothing is left")] = False,
) -> None:
    """Run consumers of a region's log in this process (until SIGTERM, or idle with --once)."""
    where = parse_region(region)

    def started(names: list[str]) -> None:
        typer.echo(f"consuming region {where.value}'s log: {', '.join(names)} (until SIGTERM)")

    names = consumer or list(CONSUMERS)
    workers = consume(open_platform(), where, names, once=once, started=started)
    for worker in workers:
        done = worker.stats
        typer.echo(
            f"{worker.consumer.name}: {done.events} records ({done.redelivered} redelivered), "
            f"{done.failures} failures"
        )


@app.command("replay")
def replay_from(
    region: RegionOpt,
    consumer: Annotated[
        str, typer.Option("--consumer", help="online, offline, requests or catalog")
    ],
    from_seq: Annotated[int, typer.Option("--from-seq", min=1)] = 1,
) -> None:
    """Deliver the log again to a consumer from a sequence number (rebuilds what it feeds)."""
    done = replay(open_platform(), parse_region(region), consumer, from_seq)
    typer.echo(f"{consumer}@{done['region']}: delivers again from seq {done['from_seq']}")
