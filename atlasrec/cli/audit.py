"""`atlasrec audit ...`: each region's hash-chained ledger, lineage and compliance reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atlasrec.cli.options import JsonOpt, RegionOpt, TenantOpt, actor, group, open_platform
from atlasrec.cli.output import print_json, print_lines
from atlasrec.dataplane.tables import AuditRecord
from atlasrec.errors import AtlasRecError
from atlasrec.pipelines.audit import region_records, verify_region
from atlasrec.tenancy import parse_region

app = group("The hash-chained audit ledger of each region.")

REPORT_FORMATS = ("json", "csv", "html")


@app.command("verify")
def verify(region: RegionOpt) -> None:
    """Check a region's hash chain; exit 1 and name the first bad record if broken."""
    reg = parse_region(region)
    result = verify_region(open_platform(), reg)
    if not result.ok:
        typer.echo(result.describe(reg), err=True)
        raise typer.Exit(1)
    typer.echo(result.describe(reg))


def _record_line(r: AuditRecord) -> str:
    return f"{r.seq:>6} {r.ts} {r.tenant_id or '-':<20} {r.action:<18} {r.subject} {r.details}"


@app.command("log")
def log(
    region: RegionOpt,
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Action prefix")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show a region's audit records, oldest first."""
    records = region_records(
        open_platform(), parse_region(region), tenant_id=tenant, action=action, limit=limit
    )
    if as_json:
        print_json([r.model_dump() for r in records])
        return
    print_lines(_record_line(r) for r in records)


@app.command("lineage")
def lineage(
    request_id: Annotated[str, typer.Option("--request-id", help="A served request's id")],
    region: Annotated[
        str | None, typer.Option("--region", help="Region to search (default: every region)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The chain behind a served request: model, DP run, data snapshot, backbone, rounds."""
    # imported here: these load the models (seconds), which `verify` and `log` never need
    from atlasrec.pipelines.compliance import served_request_lineage
    from audit.lineage import lineage_lines

    platform = open_platform()
    where = parse_region(region) if region is not None else None
    chain = served_request_lineage(platform, request_id, region=where, actor=actor())
    if as_json:
        print_json(chain)
        return
    print_lines(lineage_lines(chain))


@app.command("report")
def report(
    tenant: TenantOpt,
    fmt: Annotated[str, typer.Option("--format", help="json, csv or html")] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", help="Write to this file (default: stdout)")
    ] = None,
) -> None:
    """A tenant's compliance report in its home region (runs, budget, artifacts, refusals)."""
    from atlasrec.pipelines.compliance import compliance_report  # as in `lineage`

    if fmt not in REPORT_FORMATS:
        raise AtlasRecError(f"unknown --format {fmt!r} (expected json, csv or html)")
    built, text = compliance_report(open_platform(), tenant, fmt, actor=actor())
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise AtlasRecError(f"cannot write {str(output)!r}: {exc.strerror}") from None
    typer.echo(f"{tenant}@{built['region']}: compliance report written to {output}")
