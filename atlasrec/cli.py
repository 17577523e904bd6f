"""The `atlasrec` command line (contract: ARCHITECTURE.md, "Command-line contract")."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import click
import typer
from sqlalchemy.exc import SQLAlchemyError

from atlasrec.errors import AtlasRecError, NotYetAvailableError
from atlasrec.ingest import ingest as run_ingest
from atlasrec.intents import INTENTS, Intent
from atlasrec.platform import Platform
from atlasrec.settings import get_settings
from atlasrec.tenancy import SharingPolicy, parse_region

app = typer.Typer(
    help="AtlasRec: privacy-preserving multi-tenant recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
tenants_app = typer.Typer(help="Register tenants and manage their API keys.", no_args_is_help=True)
privacy_app = typer.Typer(help="Differential-privacy budgets.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit ledger of each region.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(privacy_app, name="privacy")
app.add_typer(audit_app, name="audit")
officers_app = typer.Typer(
    help="Privacy officer accounts of the audit UI (/audit on each regional server).",
    no_args_is_help=True,
)
app.add_typer(officers_app, name="officers")

RegionOpt = Annotated[str, typer.Option("--region", help="us, eu, in or sg")]
TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant id")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def actor() -> str:
    """Who is acting, for the audit ledger."""
    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


def _platform() -> Platform:
    return Platform()


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _not_yet(capability: str, issue: int) -> NoReturn:
    raise NotYetAvailableError(f"{capability} is not available yet (planned in issue #{issue})")


# tenants ------------------------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(
    tenant_id: Annotated[str, typer.Option("--id", help="Tenant id (a-z, 0-9, '-', '_')")],
    region: RegionOpt,
    sharing: Annotated[str, typer.Option("--sharing", help="solo, regional or global")],
    epsilon: Annotated[float | None, typer.Option("--epsilon", help="DP epsilon cap")] = None,
    delta: Annotated[float | None, typer.Option("--delta", help="DP delta")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Display name")] = None,
) -> None:
    """Register a tenant; prints JSON with its API key (shown once, only a hash is kept)."""
    try:
        policy = SharingPolicy(sharing)
    except ValueError:
        raise AtlasRecError(
            f"unknown sharing policy {sharing!r} (expected solo, regional or global)"
        ) from None
    platform = _platform()
    tenant, issued = platform.create_tenant(
        tenant_id,
        region=parse_region(region),
        sharing=policy,
        actor=actor(),
        name=name,
        epsilon_cap=epsilon,
        delta=delta,
    )
    _print_json(
        {
            "tenant_id": tenant.id,
            "name": tenant.name,
            "region": tenant.home_region,
            "sharing": tenant.sharing,
            "epsilon_cap": tenant.epsilon_cap,
            "delta": tenant.delta,
            "api_key_id": issued.key_id,
            "api_key": issued.api_key,
        }
    )


@tenants_app.command("list")
def tenants_list(
    region: Annotated[str | None, typer.Option("--region", help="Only this region")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List tenants (no secrets)."""
    tenants = _platform().control.list_tenants(parse_region(region) if region else None)
    rows = [
        {
            "tenant_id": t.id,
            "name": t.name,
            "region": t.home_region,
            "sharing": t.sharing,
            "epsilon_cap": t.epsilon_cap,
            "delta": t.delta,
        }
        for t in tenants
    ]
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        typer.echo(
            f"{r['tenant_id']:<24} {r['region']:<3} {r['sharing']:<9} eps_cap={r['epsilon_cap']}"
        )


@tenants_app.command("new-key")
def tenants_new_key(
    tenant: TenantOpt,
    label: Annotated[str | None, typer.Option("--label")] = None,
) -> None:
    """Issue another API key (printed once)."""
    platform = _platform()
    issued = platform.control.issue_api_key(tenant, label)
    platform.plane(platform.scope(tenant).region).ledger.append(
        actor=actor(),
        action="api_key.issued",
        subject=f"tenant:{tenant}",
        tenant_id=tenant,
        details={"api_key_id": issued.key_id, "label": label},
    )
    _print_json({"tenant_id": tenant, "api_key_id": issued.key_id, "api_key": issued.api_key})


@tenants_app.command("revoke-key")
def tenants_revoke_key(
    tenant: TenantOpt,
    key_id: Annotated[str, typer.Option("--key-id")],
) -> None:
    """Revoke an API key; it stops authenticating at once."""
    platform = _platform()
    platform.control.revoke_api_key(tenant, key_id)
    platform.plane(platform.scope(tenant).region).ledger.append(
        actor=actor(),
        action="api_key.revoked",
        subject=f"tenant:{tenant}",
        tenant_id=tenant,
        details={"api_key_id": key_id},
    )
    typer.echo(f"revoked API key {key_id} of tenant {tenant}")


# data -----------------------------------------------------------------------------------------


@app.command()
def ingest(
    tenant: TenantOpt,
    items: Annotated[Path | None, typer.Option("--items", help="items.csv")] = None,
    interactions: Annotated[
        Path | None, typer.Option("--interactions", help="interactions.csv")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Load a tenant's catalog and interactions (one transaction; nothing on error)."""
    if items is None and interactions is None:
        raise AtlasRecError("give --items and/or --interactions")
    platform = _platform()
    scope = platform.scope(tenant)
    report = run_ingest(
        platform.plane(scope.region),
        scope,
        secret=platform.secret,
        actor=actor(),
        items=items,
        interactions=interactions,
    )
    if as_json:
        _print_json(report.as_dict())
        return
    for file in (report.items, report.interactions):
        if file is not None:
            state = (
                "already ingested, skipped"
                if file.already_ingested
                else (f"{file.rows} rows read, {file.written} written")
            )
            typer.echo(f"{tenant}@{scope.region.value}: {file.file}: {state}")


@app.command()
def train(
    tenant: TenantOpt,
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="DP epsilon of this run (default 4)")
    ] = None,
    no_dp: Annotated[bool, typer.Option("--no-dp", help="Train without DP (tenant-local)")] = False,
    no_backbone: Annotated[
        bool,
        typer.Option(
            "--no-backbone",
            help=(
                "Start a DP run from fresh towers, not the latest federated backbone "
                "(regional, global; --no-dp runs never use it)"
            ),
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a tenant's model in its home region (user-level DP unless --no-dp).

    A regional or global tenant starts from the latest federated backbone it may use.
    """
    from atlasrec.jobs import run_train
    from atlasrec.pipelines.train import TrainResult, train_tenant

    platform = _platform()
    if platform.settings.broker_url is not None:  # a Celery task on a region worker
        done = run_train(
            platform, tenant, actor=actor(), epsilon=epsilon, no_dp=no_dp, no_backbone=no_backbone
        )
        result = TrainResult(
            done["tenant_id"], done["region"], done["model_version"], done["lineage"]
        )
    elif as_json or not sys.stderr.isatty():
        result = train_tenant(
            platform, tenant, actor=actor(), epsilon=epsilon, no_dp=no_dp, no_backbone=no_backbone
        )
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]training {task.fields[tenant]}"),
            BarColumn(),
            TextColumn("epoch {task.completed}/{task.total}  loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task("train", total=None, tenant=tenant, loss="-")

            def progress(epoch: int, epochs: int, loss: float) -> None:
                bar.update(task, completed=epoch, total=epochs, loss=f"{loss:.3f}")

            result = train_tenant(
                platform,
                tenant,
                actor=actor(),
                epsilon=epsilon,
                no_dp=no_dp,
                no_backbone=no_backbone,
                progress=progress,
            )
    summary = {
        "tenant_id": result.tenant_id,
        "region": result.region,
        "model_version": result.model_version,
        "lineage": result.lineage,
    }
    if as_json:
        _print_json(summary)
        return
    dp = result.lineage["dp"]
    privacy = (
        "no DP"
        if dp is None
        else (
            f"DP epsilon={dp['epsilon']:.3f} (noise {dp['noise_multiplier']:.3f}, "
            f"{dp['steps']} steps, q={dp['sample_rate']:.3f})"
        )
    )
    parent = result.lineage.get("parent_backbone")
    start = "fresh towers" if parent is None else f"backbone {parent['domain']}/{parent['version']}"
    typer.echo(
        f"{tenant}@{result.region}: model {result.model_version} "
        f"({result.lineage['users']} users, {result.lineage['items']} items, {privacy}, "
        f"from {start}, {result.lineage['train_seconds']}s)"
    )


@app.command()
def federate(
    region: RegionOpt,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds to run")] = 1,
    round_epsilon: Annotated[
        float, typer.Option("--round-epsilon", help="Epsilon charged to each participant per round")
    ] = 1.0,
    local_epochs: Annotated[int, typer.Option("--local-epochs")] = 2,
    min_participants: Annotated[int, typer.Option("--min-participants")] = 2,
    no_encrypt: Annotated[
        bool, typer.Option("--no-encrypt", help="Plaintext aggregation (benchmark baseline)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run federated rounds of a region's backbone (resumes an unfinished run)."""
    from server.embedded import run_embedded
    from server.federation import FederationConfig

    config = FederationConfig(
        rounds=rounds,
        round_epsilon=round_epsilon,
        local_epochs=local_epochs,
        min_participants=min_participants,
        encrypt=not no_encrypt,
    )
    platform = _platform()
    try:
        result = run_embedded(platform, parse_region(region), config, actor=actor())
    finally:
        platform.close()
    if as_json:
        _print_json(asdict(result))
        return
    verb = "resumed" if result.resumed else "ran"
    typer.echo(
        f"region {result.region}: {verb} federation {result.run_id}: "
        f"{result.rounds_done}/{result.rounds_planned} rounds, backbone {result.backbone_version}"
    )
    for entry in result.rounds:
        eps = ", ".join(f"{t} eps {p['epsilon']:.3f}" for t, p in entry["participants"].items())
        typer.echo(f"  round {entry['round']} ({entry['status']}): {eps or 'no participants'}")
        for tenant, reason in {**entry["refused"], **entry["dropped"], **entry["failed"]}.items():
            typer.echo(f"    {tenant}: {reason}")


@app.command()
def evaluate(
    tenant: TenantOpt,
    k: Annotated[int, typer.Option("--k")] = 10,
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="Also evaluate a DP model at this epsilon")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Offline evaluation against Popularity, EASE and ALS on the same splits."""
    from atlasrec.pipelines.evaluate import evaluate_tenant

    report = evaluate_tenant(_platform(), tenant, k, actor=actor(), epsilon=epsilon)
    if as_json:
        _print_json(report)
        return
    for name, split in report["splits"].items():
        typer.echo(f"{tenant} {name} ({split['tested_users']} users), k={k}:")
        for model, r in split["models"].items():
            typer.echo(
                f"  {model:<32} ndcg={r['all']['ndcg']:.4f} recall={r['all']['recall']:.4f} "
                f"map={r['all']['map']:.4f} coverage={r['all']['coverage']:.4f}"
            )


@app.command()
def recommend(
    tenant: TenantOpt,
    users_file: Annotated[
        Path, typer.Option("--users-file", help="One user id per line (optional header user_id)")
    ],
    k: Annotated[int, typer.Option("--k")] = 10,
    intent: Annotated[
        str,
        typer.Option(
            "--intent",
            click_type=click.Choice(INTENTS),
            help="next: what each user does next; profile: more for the whole history",
        ),
    ] = "next",
) -> None:
    """Recommendations for the users in a file, as JSON lines (seen items excluded)."""
    from atlasrec.pipelines.recommend import recommend_users

    try:
        lines = users_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AtlasRecError(f"cannot read users file {str(users_file)!r}: {exc}") from None
    ids = [line.strip() for line in lines if line.strip()]
    if ids and ids[0].lower() == "user_id":
        ids = ids[1:]
    cold = 0
    chosen = cast(Intent, intent)
    for rec in recommend_users(_platform(), tenant, ids, k, actor=actor(), intent=chosen):
        cold += rec.cold_start
        typer.echo(json.dumps({"user_id": rec.user_id, "items": rec.items}))
    if cold:
        typer.echo(f"{cold} of {len(ids)} users had no history: cold-start lists", err=True)


@app.command()
def serve(
    region: RegionOpt,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to bind")] = "127.0.0.1",
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = 1,
) -> None:
    """Serve a region's tenants over HTTP (the process is pinned to that region)."""
    import uvicorn

    pinned = parse_region(region)
    os.environ["ATLASREC_REGION"] = pinned.value  # workers inherit the pin
    get_settings.cache_clear()
    platform = _platform()  # fail fast on bad settings, and migrate before workers start
    platform.close()
    metrics_dir = None
    if workers > 1:  # /metrics then aggregates every worker's values
        metrics_dir = tempfile.mkdtemp(prefix="atlasrec-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    typer.echo(f"serving region {pinned.value} on http://{host}:{port} (OpenAPI at /docs)")
    try:
        uvicorn.run(
            "serving.app:app_from_settings",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http="httptools",
            loop="uvloop",
            log_level="warning",
            access_log=False,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@privacy_app.command("report")
def privacy_report(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Every DP run of a tenant, and its budget: cap, spent and remaining."""
    from atlasrec.pipelines.privacy_report import privacy_report as build

    report = build(_platform(), tenant, actor=actor())
    if as_json:
        _print_json(report)
        return
    typer.echo(
        f"{tenant}@{report['region']}: epsilon spent {report['epsilon_spent']:.3f} of "
        f"{report['epsilon_cap']:g} (remaining {report['epsilon_remaining']:.3f}), "
        f"delta {report['delta']:g}"
    )
    for r in report["runs"]:
        typer.echo(
            f"  {r['created_at'][:19]} {r['kind']:<10} {r['status']:<9} "
            f"eps={r['epsilon']:.3f} total={r['epsilon_total_after']:.3f} "
            f"sigma={r['noise_multiplier']:.3f} q={r['sample_rate']:.4f} steps={r['steps']}"
        )


# audit ------------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(region: RegionOpt) -> None:
    """Check a region's hash chain; exit 1 and name the first bad record if broken."""
    reg = parse_region(region)
    result = _platform().plane(reg).ledger.verify()
    if not result.ok:
        typer.echo(result.describe(reg), err=True)
        raise typer.Exit(1)
    typer.echo(result.describe(reg))


@audit_app.command("log")
def audit_log(
    region: RegionOpt,
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Action prefix")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show a region's audit records, oldest first."""
    records = (
        _platform()
        .plane(parse_region(region))
        .ledger.records(tenant_id=tenant, action=action, limit=limit)
    )
    if as_json:
        _print_json([r.model_dump() for r in records])
        return
    for r in records:
        typer.echo(
            f"{r.seq:>6} {r.ts} {r.tenant_id or '-':<20} {r.action:<18} {r.subject} {r.details}"
        )


@audit_app.command("lineage")
def audit_lineage(
    request_id: Annotated[str, typer.Option("--request-id", help="A served request's id")],
    region: Annotated[
        str | None, typer.Option("--region", help="Region to search (default: every region)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The chain behind a served request: model, DP run, data snapshot, backbone, rounds."""
    from atlasrec.tenancy import Region
    from audit.lineage import find_request, lineage_lines, request_lineage

    platform = _platform()
    if region is not None:
        regions = [parse_region(region)]
    else:
        regions = [platform.settings.region] if platform.settings.region else list(Region)
    scope, row = find_request(platform, request_id, regions=regions, actor=actor())
    chain = request_lineage(platform, scope, row, actor=actor())
    if as_json:
        _print_json(chain)
        return
    for line in lineage_lines(chain):
        typer.echo(line)


@audit_app.command("report")
def audit_report(
    tenant: TenantOpt,
    fmt: Annotated[str, typer.Option("--format", help="json, csv or html")] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", help="Write to this file (default: stdout)")
    ] = None,
) -> None:
    """A tenant's compliance report in its home region (runs, budget, artifacts, refusals)."""
    from audit.reports import report_csv, tenant_report
    from audit.ui.templating import report_html

    if fmt not in ("json", "csv", "html"):
        raise AtlasRecError(f"unknown --format {fmt!r} (expected json, csv or html)")
    platform = _platform()
    report = tenant_report(platform, platform.control.get_tenant(tenant), actor=actor())
    text = {
        "json": lambda: json.dumps(report, indent=2, default=str) + "\n",
        "csv": lambda: report_csv(report),
        "html": lambda: report_html(report),
    }[fmt]()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise AtlasRecError(f"cannot write {str(output)!r}: {exc.strerror}") from None
    typer.echo(f"{tenant}@{report['region']}: compliance report written to {output}")


@privacy_app.command("set-cap")
def privacy_set_cap(
    tenant: TenantOpt,
    epsilon: Annotated[str, typer.Option("--epsilon", help="The new epsilon cap")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger)")],
) -> None:
    """Raise or lower a tenant's epsilon cap, with a reason (a ledger record of its region)."""
    from audit.caps import change_epsilon_cap, parse_cap

    change = change_epsilon_cap(
        _platform(), tenant, parse_cap(epsilon), reason=reason, actor=actor()
    )
    state = (
        "DP training and federation are stopped (nothing left to spend)"
        if change.stops_training
        else f"{change.new_cap - change.spent:.3f} left"
    )
    typer.echo(
        f"{tenant}@{change.region}: epsilon cap {change.old_cap:g} -> {change.new_cap:g} "
        f"(spent {change.spent:.3f}; {state}); ledger record seq={change.ledger_seq}"
    )


# officers ---------------------------------------------------------------------------------------


def _officer_json(officer: Any) -> dict[str, Any]:
    return {
        "officer_id": officer.id,
        "name": officer.name,
        "role": officer.role,
        "regions": officer.regions,
        "tenant_id": officer.tenant_id,
        "disabled": officer.disabled_at is not None,
    }


@officers_app.command("create")
def officers_create(
    officer_id: Annotated[str, typer.Option("--id", help="Officer id (a-z, 0-9, . _ @ -)")],
    role: Annotated[str, typer.Option("--role", help="platform or tenant")],
    regions: Annotated[
        str | None, typer.Option("--regions", help="platform: regions, e.g. eu,us")
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="tenant: the tenant id")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Display name")] = None,
) -> None:
    """Create an officer; prints JSON with the generated password (shown once)."""
    from atlasrec.control.officers import OfficerRole, Officers

    try:
        officer_role = OfficerRole(role)
    except ValueError:
        raise AtlasRecError(f"unknown role {role!r} (expected platform or tenant)") from None
    parsed = [parse_region(r.strip()) for r in regions.split(",") if r.strip()] if regions else []
    platform = _platform()
    issued = Officers(platform.control.engine).create(
        officer_id, role=officer_role, regions=parsed, tenant_id=tenant, name=name
    )
    homes = parsed if officer_role.value == "platform" else [platform.scope(tenant or "").region]
    for region in homes:
        platform.plane(region).ledger.append(
            actor=actor(),
            action="officer.created",
            subject=f"officer:{officer_id}",
            tenant_id=tenant,
            details={"role": officer_role.value, "regions": issued.officer.regions},
        )
    _print_json({**_officer_json(issued.officer), "password": issued.password})


@officers_app.command("list")
def officers_list(as_json: JsonOpt = False) -> None:
    """List officers (no password hashes)."""
    from atlasrec.control.officers import Officers

    rows = [_officer_json(o) for o in Officers(_platform().control.engine).list()]
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        scope = ",".join(r["regions"]) if r["role"] == "platform" else r["tenant_id"]
        typer.echo(
            f"{r['officer_id']:<24} {r['role']:<9} {scope}"
            + ("  (disabled)" if r["disabled"] else "")
        )


@officers_app.command("reset-password")
def officers_reset_password(
    officer_id: Annotated[str, typer.Option("--id", help="Officer id")],
) -> None:
    """Replace an officer's password with a generated one (printed once); sessions end."""
    from atlasrec.control.officers import Officers

    password = Officers(_platform().control.engine).reset_password(officer_id)
    _print_json({"officer_id": officer_id, "password": password})


@officers_app.command("disable")
def officers_disable(officer_id: Annotated[str, typer.Option("--id", help="Officer id")]) -> None:
    """Disable an officer: no more sign-ins, and open sessions end."""
    from atlasrec.control.officers import Officers

    Officers(_platform().control.engine).disable(officer_id)
    typer.echo(f"officer {officer_id} disabled")


@app.command()
def demo(
    fresh: Annotated[bool, typer.Option("--fresh", help="Start from an empty data folder")] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep the regional servers running at the end")
    ] = False,
) -> None:
    """The platform end to end on the MovieLens tenant mix: ingest, train, serve, audit."""
    from atlasrec.demo import run_demo

    run_demo(fresh=fresh, actor=actor(), keep_serving=serve)


def main() -> None:
    """Console entry point: typed errors become one line on stderr and exit status 1."""
    try:
        code = app(standalone_mode=False)
    except AtlasRecError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except SQLAlchemyError as exc:
        typer.echo(f"error: database failure: {str(exc).splitlines()[0]}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
