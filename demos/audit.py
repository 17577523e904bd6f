"""The demo's audit part: privacy officers, a served request followed back, exported reports.

Officers are created once (a platform officer for every region, and a tenant officer of the
first tenant); their generated passwords are kept in `demo-officers.json` (mode 600) in the
data folder, as the API keys are in `demo-api-keys.json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from sqlmodel import col, select

from atlasrec.control.officers import OfficerRole, Officers
from atlasrec.dataplane.tables import ServedRequest
from atlasrec.datasets import TenantDataset
from atlasrec.platform import Platform
from atlasrec.settings import get_settings
from atlasrec.tenancy import Region
from audit.ledger_answers import LedgerAnswer
from audit.lineage import lineage_lines, request_lineage
from audit.reports import boundary_refusals, report_csv, tenant_report
from audit.ui.templating import report_html

OFFICERS_FILE = "demo-officers.json"
PLATFORM_OFFICER = "privacy-officer"


def _officers_file() -> Path:
    return get_settings().home / OFFICERS_FILE


def demo_officers(
    platform: Platform, datasets: Sequence[TenantDataset], actor: str
) -> dict[str, dict[str, Any]]:
    """The demo's officers (created, or given a new password if the file was lost)."""
    path = _officers_file()
    saved: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
    officers = Officers(platform.control.engine)
    first = datasets[0]
    wanted: list[tuple[str, dict[str, Any]]] = [
        (PLATFORM_OFFICER, {"role": OfficerRole.PLATFORM, "regions": list(Region)}),
        (f"{first.tenant_id}-officer", {"role": OfficerRole.TENANT, "tenant_id": first.tenant_id}),
    ]
    for officer_id, spec in wanted:
        if officers.get(officer_id) is None:
            password = officers.create(officer_id, **spec).password
            homes = spec.get("regions") or [first.region]
            for region in homes:
                platform.plane(region).ledger.append(
                    actor=actor,
                    action="officer.created",
                    subject=f"officer:{officer_id}",
                    tenant_id=spec.get("tenant_id"),
                    details={"role": spec["role"].value},
                )
        elif officer_id not in saved:
            password = officers.reset_password(officer_id)
        else:
            continue
        saved[officer_id] = {
            "password": password,
            "role": spec["role"].value,
            "sees": spec.get("tenant_id") or "every tenant of every region",
        }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(saved, fh, indent=2)
    return saved


def print_audit_access(
    console: Console, urls: dict[str, str], datasets: Sequence[TenantDataset], actor: str
) -> None:
    """Where the running servers' audit UIs are, and who can sign in."""
    platform = Platform(get_settings())
    try:
        officers = demo_officers(platform, datasets, actor)
    finally:
        platform.close()
    console.print("  privacy officer UI (sign in with an officer below):")
    for region, url in urls.items():
        console.print(f"    {region}: {url}/audit/")
    for officer_id, entry in officers.items():
        console.print(
            f"    officer {officer_id} / {entry['password']}  ({entry['role']}: {entry['sees']})"
        )


def _other_ledgers(platform: Platform, tenant_id: str) -> list[LedgerAnswer]:
    """Every other region's refusals involving the tenant (this process holds every region)."""
    home = platform.scope(tenant_id).region
    return [
        LedgerAnswer(r, boundary_refusals(platform.plane(r).ledger, tenant_id, redact_others=False))
        for r in Region
        if r != home
    ]


def audit_demo(
    console: Console, platform: Platform, datasets: Sequence[TenantDataset], actor: str
) -> None:
    """Follow a served request back, export every tenant's report, print how to sign in."""
    officers = demo_officers(platform, datasets, actor)
    first = datasets[0]
    scope = platform.scope(first.tenant_id)
    plane = platform.plane(scope.region)
    with plane.session(scope, actor=actor, action="demo.lineage") as session:
        latest = session.execute(
            select(ServedRequest).order_by(col(ServedRequest.served_at).desc()).limit(1)
        ).scalar_one_or_none()
    if latest is not None:
        console.print(
            f"\n[bold]lineage[/bold] of {first.tenant_id}'s latest served request "
            f"(atlasrec audit lineage --request-id {latest.request_id}):"
        )
        for line in lineage_lines(request_lineage(platform, scope, latest, actor=actor)):
            console.print(escape(line), soft_wrap=True)

    folder = get_settings().home / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    for ds in datasets:
        tenant = platform.control.get_tenant(ds.tenant_id)
        report = tenant_report(
            platform, tenant, actor=actor, other_ledgers=_other_ledgers(platform, tenant.id)
        )
        stem = folder / f"{ds.tenant_id}-{report['region']}-compliance"
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
        stem.with_suffix(".csv").write_text(report_csv(report))
        stem.with_suffix(".html").write_text(report_html(report))
    console.print(
        f"\ncompliance reports (JSON, CSV, printable HTML) of {len(datasets)} tenants "
        f"written to {folder}"
    )

    region = first.region.value
    console.print("\n[bold]privacy officer UI[/bold] (/audit on each regional server):")
    console.print(
        f"  atlasrec serve --region {region} --port 8080   then open "
        f"http://127.0.0.1:8080/audit/   (or: atlasrec demo --serve)"
    )
    for officer_id, entry in officers.items():
        console.print(
            f"  officer {officer_id} / {entry['password']}  ({entry['role']}: {entry['sees']})"
        )
    console.print(f"  passwords kept in {_officers_file()} (mode 600)")
