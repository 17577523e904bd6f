"""`atlasrec privacy ...`: a tenant's differential-privacy runs, budget and audits."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from atlasrec.cli.options import JsonOpt, TenantOpt, actor, group, open_platform
from atlasrec.cli.output import print_json, print_lines
from atlasrec.pipelines.privacy_report import privacy_report
from atlasrec.privacy_audit import audit_release
from audit.caps import CapChange, change_epsilon_cap, parse_cap

app = group("Differential-privacy budgets and empirical audits.")


def _report_lines(tenant: str, report: dict[str, Any]) -> list[str]:
    lines = [
        f"{tenant}@{report['region']}: epsilon spent {report['epsilon_spent']:.3f} of "
        f"{report['epsilon_cap']:g} (remaining {report['epsilon_remaining']:.3f}), "
        f"delta {report['delta']:g}"
    ]
    for r in report["runs"]:
        lines.append(
            f"  {r['created_at'][:19]} {r['kind']:<10} {r['status']:<9} "
            f"eps={r['epsilon']:.3f} total={r['epsilon_total_after']:.3f} "
            f"sigma={r['noise_multiplier']:.3f} q={r['sample_rate']:.4f} steps={r['steps']}"
        )
        if r["audit"] is not None:
            lines.append(f"    {_audit_line(r['audit'])}")
    return lines


def _audit_line(audit: dict[str, Any]) -> str:
    """A release's empirical audit next to its claim."""
    if audit["status"] == "pending":
        return "empirical audit: pending (`atlasrec privacy audit --tenant T`)"
    control = audit["control"]
    verdict = "ALARM: above the claim" if audit["alarm"] else "below the claim"
    return (
        f"empirical audit: epsilon >= {audit['epsilon_lower_bound']:.3f} (95%), claimed "
        f"{audit['claimed_epsilon']:.3f}: {verdict}; attack AUC {audit['auc']:.3f} over "
        f"{audit['canaries']} canaries (without DP: epsilon >= "
        f"{control['epsilon_lower_bound']:.3f}, AUC {control['auc']:.3f})"
    )


@app.command("report")
def report(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Every DP run of a tenant, and its budget: cap, spent and remaining."""
    built = privacy_report(open_platform(), tenant, actor=actor())
    if as_json:
        print_json(built)
        return
    print_lines(_report_lines(tenant, built))


@app.command("audit")
def audit(
    tenant: TenantOpt,
    version: Annotated[
        str | None, typer.Option("--version", help="Model version (default: the live one)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Audit a DP release empirically: canaries, one run, an epsilon lower bound (recorded)."""
    done = audit_release(open_platform(), tenant, actor=actor(), version=version)
    if as_json:
        print_json(done)
        return
    audited = {**done, "status": "alarm" if done["alarm"] else "audited"}
    typer.echo(f"{tenant}@{done['region']} model {done['model_version']}: {_audit_line(audited)}")


def _cap_line(tenant: str, change: CapChange) -> str:
    state = (
        "DP training and federation are stopped (nothing left to spend)"
        if change.stops_training
        else f"{change.new_cap - change.spent:.3f} left"
    )
    return (
        f"{tenant}@{change.region}: epsilon cap {change.old_cap:g} -> {change.new_cap:g} "
        f"(spent {change.spent:.3f}; {state}); ledger record seq={change.ledger_seq}"
    )


@app.command("set-cap")
def set_cap(
    tenant: TenantOpt,
    epsilon: Annotated[str, typer.Option("--epsilon", help="The new epsilon cap")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger)")],
) -> None:
    """Raise or lower a tenant's epsilon cap, with a reason (a ledger record of its region)."""
    change = change_epsilon_cap(
        open_platform(), tenant, parse_cap(epsilon), reason=reason, actor=actor()
    )
    typer.echo(_cap_line(tenant, change))
