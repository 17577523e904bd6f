"""The tenant data set record and the CSV contract every generator in this package writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atlasrec.tenancy import Region, SharingPolicy

ITEMS_HEADER: tuple[str, ...] = ("item_id", "title", "category", "description", "year")
INTERACTIONS_HEADER: tuple[str, ...] = ("user_id", "item_id", "timestamp", "event", "weight")
ITEMS_FILE = "items.csv"
INTERACTIONS_FILE = "interactions.csv"


@dataclass(frozen=True)
class TenantDataset:
    """One tenant's generated files and their exact row counts."""

    tenant_id: str
    name: str
    region: Region
    sharing: SharingPolicy
    items_csv: Path
    interactions_csv: Path
    n_items: int
    n_users: int
    n_interactions: int


def format_tenant_table(datasets: Sequence[TenantDataset]) -> str:
    """Render datasets as a fixed-width table (tenant, region, sharing, items, users, ...)."""
    header = ("tenant", "region", "sharing", "items", "users", "interactions")
    rows = [header] + [
        (
            d.tenant_id,
            d.region.value,
            d.sharing.value,
            str(d.n_items),
            str(d.n_users),
            str(d.n_interactions),
        )
        for d in datasets
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
