"""What officers ask of the audit trail: a served request's lineage, a tenant's report."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from audit.lineage import find_request, request_lineage
from audit.reports import report_csv, tenant_report
from audit.ui.templating import report_html


def _report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str) + "\n"


REPORT_FORMATS: dict[str, Callable[[dict[str, Any]], str]] = {
    "json": _report_json,
    "csv": report_csv,
    "html": report_html,
}
"""How a compliance report is written, per format."""


def served_request_lineage(
    platform: Platform, request_id: str, *, region: Region | None, actor: str
) -> dict[str, Any]:
    """The chain behind a served request, searched in `region` or every region in reach."""
    if region is not None:
        regions = [region]
    else:
        regions = [platform.settings.region] if platform.settings.region else list(Region)
    scope, row = find_request(platform, request_id, regions=regions, actor=actor)
    return request_lineage(platform, scope, row, actor=actor)


def compliance_report(
    platform: Platform, tenant_id: str, fmt: str, *, actor: str
) -> tuple[dict[str, Any], str]:
    """A tenant's compliance report, and its text in `fmt` (a key of REPORT_FORMATS)."""
    report = tenant_report(platform, platform.control.get_tenant(tenant_id), actor=actor)
    return report, REPORT_FORMATS[fmt](report)
