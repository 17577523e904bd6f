"""`atlasrec privacy ...`: a tenant's differential-privacy runs, budget and audits."""

from __future__ import annotations

import getpass
import os
from typing import Annotated, Any

import typer

from atlasrec.cli.options import JsonOpt, TenantOpt, actor, group, open_platform
from atlasrec.cli.output import print_json, print_lines
from atlasrec.control.cap_requests import CapRequests
from atlasrec.control.officers import Officers
from atlasrec.errors import RefusedError
from atlasrec.pipelines.privacy_report import privacy_report
from atlasrec.platform import Platform
from atlasrec.privacy_audit import audit_release
from atlasrec.tenancy import Region
from audit import cap_requests
from audit.access import Access, Principal
from audit.caps import CapChange, change_epsilon_cap, parse_cap

app = group("Differential-privacy budgets and empirical audits.")
OfficerOpt = Annotated[
    str,
    typer.Option(
        "--officer", help="Acting officer (password: ATLASREC_OFFICER_PASSWORD or a prompt)"
    ),
]


def _report_lines(tenant: str, report: dict[str, Any]) -> list[str]:
    lines = [
        f"{tenant}@{report['region']}: epsilon spent {report['epsilon_spent']:.3f} of "
        f"{report['epsilon_cap']:g} (remaining {report['epsilon_remaining']:.3f}), "
        f"delta {report['delta']:g}"
    ]
    for r in report["runs"]:
        lines.append(
            f"  {r['created_at'][:19]} {r['kind']:<10} {r['status']:<9} "
            f"standalone ε={r['epsilon_standalone']:.3f} "
            f"increment={r['epsilon_increment']:.3f} "
            f"composed total after={r['epsilon_total_after']:.3f} "
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
    epsilon: Annotated[str, typer.Option("--epsilon", help="The new, lower epsilon cap")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger)")],
) -> None:
    """Lower a tenant's epsilon cap, with a reason (raising it is `request-raise`)."""
    change = change_epsilon_cap(
        open_platform(), tenant, parse_cap(epsilon), reason=reason, actor=actor()
    )
    typer.echo(_cap_line(tenant, change))


def _officer(platform: Platform, officer_id: str) -> Principal:
    """The officer acting, signed in with ATLASREC_OFFICER_PASSWORD or a prompt."""
    password = os.environ.get("ATLASREC_OFFICER_PASSWORD") or getpass.getpass(
        f"password of officer {officer_id}: "
    )
    officer = Officers(platform.control.engine).authenticate(officer_id.strip().lower(), password)
    if officer is None:
        raise RefusedError(f"officer {officer_id!r}: unknown officer or wrong password")
    return Principal.of(officer)


def _access(platform: Platform, tenant_id: str) -> Access:
    """The authorisation of the tenant's home region (refusals go to its ledger)."""
    return Access(platform, Region(platform.control.get_tenant(tenant_id).home_region))


@app.command("request-raise")
def request_raise(
    tenant: TenantOpt,
    epsilon: Annotated[str, typer.Option("--epsilon", help="The higher epsilon cap asked for")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger)")],
    officer: OfficerOpt,
) -> None:
    """Request a raise of a tenant's cap; a second (platform) officer must approve it."""
    platform = open_platform()
    principal = _officer(platform, officer)
    current = platform.control.get_tenant(tenant).epsilon_cap
    done = cap_requests.set_cap(
        platform,
        _access(platform, tenant),
        principal,
        tenant,
        epsilon,
        reason=reason,
        expected_cap=current,
    )
    if isinstance(done, CapChange):
        typer.echo(_cap_line(tenant, done))
        return
    typer.echo(
        f"{tenant}: raise of the cap {done.cap_then:g} -> {done.requested_cap:g} requested "
        f"(request {done.id}); a platform officer of the tenant's region other than "
        f"{principal.officer_id} must approve it: atlasrec privacy decide-raise --request {done.id}"
    )


@app.command("decide-raise")
def decide_raise(
    request: Annotated[str, typer.Option("--request", help="The raise request's id")],
    officer: OfficerOpt,
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approving")] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (required to reject; recorded)")
    ] = "",
) -> None:
    """Approve (or --reject) a raise request: a platform officer other than the requester."""
    platform = open_platform()
    principal = _officer(platform, officer)
    found = CapRequests(platform.control.engine).get(request)
    if found is None:
        raise cap_requests.UnknownRaiseRequestError(f"no raise request {request!r}")
    access = _access(platform, found.tenant_id)
    if reject:
        done = cap_requests.reject_raise(platform, access, principal, request, reason=reason)
        typer.echo(f"{done.tenant_id}: raise request {done.id} rejected by {principal.officer_id}")
        return
    change = cap_requests.approve_raise(platform, access, principal, request)
    typer.echo(_cap_line(change.tenant_id, change))


@app.command("raise-requests")
def raise_requests(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """A tenant's requests to raise its cap, newest first, and who decided them."""
    platform = open_platform()
    platform.control.get_tenant(tenant)
    rows = [
        r.model_dump(mode="json") for r in CapRequests(platform.control.engine).of_tenant(tenant)
    ]
    if as_json:
        print_json(rows)
        return
    print_lines(
        f"{r['id']}  {r['status']:<10} {r['cap_then']:g} -> {r['requested_cap']:g}  by "
        f"{r['requested_by']} at {r['requested_at'][:19]}"
        + (f"; decided by {r['decided_by']}" if r["decided_by"] else "")
        + f": {r['reason']}"
        for r in rows
    )
