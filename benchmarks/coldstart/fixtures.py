"""The cold-start cases and their data: splits, train parts, registered and embedded homes."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from atlasrec.dataplane.training_data import TenantDataset as TrainingData
from atlasrec.dataplane.training_data import load_tenant_dataset
from atlasrec.datasets.spec import INTERACTIONS_HEADER, TenantDataset
from atlasrec.evaluation import Interactions
from atlasrec.evaluation.splits import Split, temporal_leave_last_out
from atlasrec.ingest import ingest
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, SharingPolicy

K = 10
TARGET_RATIO = 1.3
BACKBONE_ROWS = ("backbone", "global backbone")
ACTOR = "bench-coldstart"


@dataclass(frozen=True)
class Case:
    """A small tenant and how it meets the backbone."""

    tenant_id: str
    region: Region
    sharing: SharingPolicy
    federates: bool
    """True: a member of its region's federation (its train part); False: joins afterwards."""
    note: str


CASES = (
    Case(
        "ml-docs",
        Region.IN,
        SharingPolicy.GLOBAL,
        True,
        "demo policy (global, in): sparse member of region in's federation",
    ),
    Case(
        "ml-western",
        Region.US,
        SharingPolicy.REGIONAL,
        False,
        "counterfactual (demo: solo, sg): a new regional tenant of us, after us's federation",
    ),
)


PEERS = {Region.IN: ("ml-comedy",), Region.US: ("ml-family", "ml-action")}
"""The other tenants of each federation, with their demo policies and all their data."""


def read_log(ds: TenantDataset, item_ids: list[str]) -> Interactions:
    """A tenant's interactions CSV as `Interactions`, items indexed like `item_ids`."""
    index = {item: n for n, item in enumerate(item_ids)}
    users: dict[str, int] = {}
    with ds.interactions_csv.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return Interactions.from_arrays(
        [users.setdefault(r["user_id"], len(users)) for r in rows],
        [index[r["item_id"]] for r in rows],
        [int(r["timestamp"]) for r in rows],
        n_users=len(users),
        n_items=len(item_ids),
    )


def write_train_part(ds: TenantDataset, split: Split, item_ids: list[str], path: Path) -> int:
    """Write the rows of `ds` that are in `split.train` (the held-out pairs removed)."""
    index = {item: n for n, item in enumerate(item_ids)}
    users: dict[str, int] = {}
    held = {(u, int(items[0])) for u, items in split.test.items()}
    kept = 0
    with (
        ds.interactions_csv.open(encoding="utf-8", newline="") as src,
        path.open("w", encoding="utf-8", newline="") as dst,
    ):
        writer = csv.writer(dst, lineterminator="\n")
        writer.writerow(INTERACTIONS_HEADER)
        for row in csv.DictReader(src):
            user = users.setdefault(row["user_id"], len(users))
            if (user, index[row["item_id"]]) not in held:
                writer.writerow([row[h] for h in INTERACTIONS_HEADER])
                kept += 1
    return kept


def sorted_item_ids(ds: TenantDataset) -> list[str]:
    """The tenant's item ids in the order the platform's datasets use (sorted)."""
    with ds.items_csv.open(encoding="utf-8", newline="") as fh:
        return sorted(r["item_id"] for r in csv.DictReader(fh))


def register(
    platform: Platform, ds: TenantDataset, region: Region, sharing: SharingPolicy, inter: Path
) -> None:
    """Create the tenant and ingest its catalog and `inter` (embedding the catalog once)."""
    platform.create_tenant(ds.tenant_id, region=region, sharing=sharing, actor=ACTOR)
    scope = platform.scope(ds.tenant_id)
    plane = platform.plane(region)
    ingest(
        plane,
        scope,
        secret=platform.secret,
        actor=ACTOR,
        items=ds.items_csv,
        interactions=inter,
    )
    load_tenant_dataset(plane, scope, actor=ACTOR)  # embeds the catalog (cached)


def tenant_data(platform: Platform, case: Case, item_ids: list[str]) -> TrainingData:
    """The small tenant's ingested train part and content, as training reads them."""
    scope = platform.scope(case.tenant_id)
    data = load_tenant_dataset(platform.plane(scope.region), scope, actor=ACTOR)
    if data.item_ids != item_ids:  # the split's item indices must be the content's rows
        raise RuntimeError(f"{case.tenant_id}: the platform orders the catalog differently")
    return data


def setup(work: Path, datasets: dict[str, TenantDataset]) -> tuple[Path, dict[str, Split]]:
    """A home with every federating tenant ingested and embedded; the small tenants' splits."""
    splits: dict[str, Split] = {}
    for case in CASES:
        ds = datasets[case.tenant_id]
        splits[case.tenant_id] = temporal_leave_last_out(read_log(ds, sorted_item_ids(ds)))
        write_train_part(ds, splits[case.tenant_id], sorted_item_ids(ds), train_csv(work, ds))
    home = work / "base-home"
    platform = Platform(settings_at(home))
    try:
        for region, peers in PEERS.items():
            for tenant_id in peers:
                ds = datasets[tenant_id]
                register(platform, ds, region, ds.sharing, ds.interactions_csv)
        for case in CASES:
            if case.federates:
                ds = datasets[case.tenant_id]
                register(platform, ds, case.region, case.sharing, train_csv(work, ds))
    finally:
        platform.close()
    return home, splits


def train_csv(work: Path, ds: TenantDataset) -> Path:
    """Where a small tenant's train part is written."""
    return work / f"{ds.tenant_id}-train.csv"


def settings_at(home: Path) -> Settings:
    """Embedded settings in `home` (SQLite, local folders), whatever the environment says."""
    return Settings(
        home=home, control_db_url=None, region_db_urls={}, redis_url=None, broker_url=None
    )
