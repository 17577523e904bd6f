"""`atlasrec monitor ...`: what the platform watches in a region."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from atlasrec.cli.options import JsonOpt, RegionOpt, TenantOpt, actor, group, open_platform
from atlasrec.cli.output import print_json
from atlasrec.drift import check_drift
from atlasrec.jobs import RETRAIN_ROLLS_OUT, run_train
from atlasrec.leakage import resume, scan_region
from atlasrec.outcomes import DEFAULT_DAYS, DEFAULT_K, refresh_outcomes
from atlasrec.pipelines.monitor import monitor_status
from atlasrec.pipelines.retrain import retrain_stale
from atlasrec.tenancy import parse_region

app = group("What the platform watches in a region: freshness, drift and budgets.")


@app.command("retrain")
def retrain(region: RegionOpt, as_json: JsonOpt = False) -> None:
    """Retrain every model of the region past its SLO or drifted, budget permitting (DP).

    Drift is read from each tenant's last drift check (`atlasrec monitor drift`, or beat's).
    """
    platform = open_platform()
    who = actor()

    def submit(tenant_id: str) -> str:
        done = run_train(
            platform, tenant_id, actor=who, epsilon=None, no_dp=False, rollout=RETRAIN_ROLLS_OUT
        )
        return str(done["model_version"])

    decisions = retrain_stale(platform, parse_region(region), actor=who, submit=submit)
    if as_json:
        print_json({"region": region, "decisions": decisions})
        return
    if not decisions:
        typer.echo(f"region {region}: no model past its SLO or drifted needs a retrain")
    for d in decisions:
        what = f"retrained: {d['job']}" if d["scheduled"] else f"refused: {d['reason']}"
        what = f"{d['trigger']}; {what}"
        typer.echo(f"{d['tenant_id']}: {what}")


@app.command("outcomes")
def outcomes(
    tenant: TenantOpt,
    days: Annotated[
        int, typer.Option("--days", help="Recompute the last N UTC days (today included)")
    ] = DEFAULT_DAYS,
    k: Annotated[int, typer.Option("--k", help="CTR@k's k")] = DEFAULT_K,
    as_json: JsonOpt = False,
) -> None:
    """Online metrics of served recommendations: per day and model version (in-process job)."""
    rows = refresh_outcomes(open_platform(), tenant, actor=actor(), days=days, k=k)
    if as_json:
        print_json({"tenant": tenant, "days": days, "k": k, "rows": [asdict(r) for r in rows]})
        return
    if not rows:
        typer.echo(f"tenant {tenant}: no request served in the last {days} day(s)")
    for r in rows:
        typer.echo(
            f"{r.day} {r.model_version}: {r.requests} requests, CTR@{r.k} {r.ctr_at_k:.4f} "
            f"({r.clicks}/{r.impressions}), conversions/request {r.conversions_per_request:.4f}, "
            f"coverage {r.coverage:.3f}, novelty {r.novelty:.2f} bits, p99 "
            f"{r.latency_ms['p99']:.1f} ms, degraded {r.degraded_share:.1%}"
        )


@app.command("status")
def status(region: RegionOpt, as_json: JsonOpt = False) -> None:
    """Every tenant of the region: freshness against its SLOs, DP budget, and flags."""
    built = monitor_status(open_platform(), parse_region(region), actor=actor())
    if as_json:
        print_json(built)
        return
    lags = ", ".join(f"{name} {lag}" for name, lag in built["consumers"].items()) or "none"
    typer.echo(f"region {built['region']}: consumer lag: {lags}")
    for tenant in built["tenants"]:
        ages = ", ".join(
            f"{name} {_age(s['age_s'])}/{_age(s['slo_s'])}" for name, s in tenant["signals"].items()
        )
        budget = tenant["budget"]
        flags = ", ".join(tenant["flags"]) or "ok"
        typer.echo(
            f"  {tenant['tenant_id']} ({tenant['sharing']}): {flags}; age/SLO: {ages}; "
            f"epsilon {budget['spent']:.2f} of {budget['cap']:g}"
        )


@app.command("drift")
def drift(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """The tenant's traffic since its model's training snapshot against the snapshot.

    Recorded in the region's ledger; a drifted model is a retrain candidate.
    """
    report = check_drift(open_platform(), tenant, actor=actor())
    if as_json:
        print_json(report.as_json())
        return
    if report.model_version is None:
        typer.echo(f"{tenant} ({report.region}): no model yet, so no training snapshot to compare")
        return
    verdict = f"drift in {', '.join(report.drifted)}" if report.drifted else "no drift"
    typer.echo(f"{tenant} ({report.region}), model {report.model_version}: {verdict}")
    for s in report.signals:
        value = "-" if s["value"] is None else f"{s['value']:.3f}"
        p_value = "-" if s["p_value"] is None else f"{s['p_value']:.2g}"
        typer.echo(
            f"  {s['signal']:<19} {s['status']:<17} {s['method']} {value} "
            f"(threshold {s['threshold']:g}, p {p_value}; n {s['reference_n']}/{s['current_n']})"
        )


@app.command("leakage")
def leakage(region: RegionOpt, as_json: JsonOpt = False) -> None:
    """Scan the region for every tenant's canaries; a hit quarantines and stops federation."""
    report = scan_region(open_platform(), parse_region(region), actor=actor())
    if as_json:
        print_json(report.as_json())
        return
    verdict = "clean" if not report.hits and not report.unverified else "NOT clean"
    typer.echo(f"region {region}: {report.scanned} targets scanned: {verdict}")
    for hit in report.hits:
        typer.echo(f"  HIT: {hit.owner}'s canary {hit.canary} in {hit.found_in}")
    for target in report.unverified:
        typer.echo(f"  unverified: {target['target']} ({target['reason']})")


@app.command("resume-federation")
def resume_federation(
    region: RegionOpt,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger)")],
) -> None:
    """Resume a region's federation stopped by a leakage finding (a ledger record)."""
    resume(open_platform(), parse_region(region), reason=reason, actor=actor())
    typer.echo(f"region {region}: federation resumed")


def _age(seconds: float | None) -> str:
    """`-` (nothing to measure), or seconds, minutes, hours or days."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
