"""`atlasrec demo`: the platform end to end on embedded defaults, on the MovieLens tenant mix."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table
from sqlalchemy import func
from sqlmodel import col as column_of
from sqlmodel import select

from atlasrec.dataplane.repository import TenantData, TenantStats
from atlasrec.dataplane.tables import IngestBatch
from atlasrec.datasets import TenantDataset, build_movielens_tenant_mix
from atlasrec.errors import BoundaryViolation
from atlasrec.ingest import ingest
from atlasrec.models.bundle import KIND
from atlasrec.pipelines.privacy_report import privacy_report
from atlasrec.pipelines.recommend import recommend_users
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Plane, Platform
from atlasrec.settings import get_settings
from atlasrec.tenancy import Region, Scope
from demos.audit import audit_demo
from demos.federation import federate_regions
from demos.rollout import rollout_demo
from demos.serving import first_user, serve_regions


def _day(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d") if ts is not None else "-"


def _reset(home_dir: str) -> None:
    """Remove what earlier runs left in the data folder (only AtlasRec's own entries)."""
    for name in (
        "control.db",
        "control.db-wal",
        "control.db-shm",
        "regions",
        "demo-data",
        "demo-api-keys.json",
    ):
        path = os.path.join(home_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def run_demo(*, fresh: bool, actor: str, keep_serving: bool = False) -> None:
    """Create the tenant mix, ingest it, show per-region summaries and the boundaries at work."""
    console = Console(width=None if sys.stdout.isatty() else 110)
    settings = get_settings()
    if fresh:
        _reset(str(settings.home))
    settings.home.mkdir(parents=True, exist_ok=True)
    platform = Platform(settings)
    console.print(f"[bold]AtlasRec demo[/bold]  data folder: {settings.home}")

    datasets = build_movielens_tenant_mix(settings.home / "demo-data")
    keys_file = settings.home / "demo-api-keys.json"
    keys: dict[str, str] = json.loads(keys_file.read_text()) if keys_file.exists() else {}
    stats: dict[str, TenantStats] = {}
    for ds in datasets:
        if platform.control.home_region_of(ds.tenant_id) is None:
            _, issued = platform.create_tenant(
                ds.tenant_id, region=ds.region, sharing=ds.sharing, name=ds.name, actor=actor
            )
            keys[ds.tenant_id] = issued.api_key
            console.print(f"created tenant {ds.tenant_id} ({ds.region.value}, {ds.sharing.value})")
        stats[ds.tenant_id] = _ingest(platform, ds, actor, console)
    fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(keys, fh, indent=2)
    console.print(f"API keys (shown once at creation) saved to {keys_file} (mode 600)\n")

    _summary(console, datasets, stats)
    federate_regions(console, platform, datasets, actor)
    _train_all(console, platform, datasets, actor)
    _boundaries(console, platform, datasets, actor)
    platform.close()
    largest = max(datasets, key=lambda d: d.n_users)  # the rollout demo's tenant

    def rollout(urls: dict[str, str]) -> None:
        if largest.tenant_id in keys:
            url, key = urls[largest.region.value], keys[largest.tenant_id]
            releasing = Platform(settings)
            try:
                rollout_demo(console, releasing, largest, url, key, actor)
            finally:
                releasing.close()

    serve_regions(console, datasets, keys, keep_serving=keep_serving, meanwhile=rollout)
    platform = Platform(settings)
    _verify(console, platform)
    audit_demo(console, platform, datasets, actor)  # lineage, reports, officers' sign-in
    platform.close()


def _ingest(platform: Platform, ds: TenantDataset, actor: str, console: Console) -> TenantStats:
    scope = platform.scope(ds.tenant_id)
    plane = platform.plane(scope.region)
    report = ingest(
        plane,
        scope,
        secret=platform.secret,
        actor=actor,
        items=ds.items_csv,
        interactions=ds.interactions_csv,
    )
    for file in (report.items, report.interactions):
        assert file is not None
        state = "unchanged" if file.already_ingested else f"{file.written}/{file.rows} rows written"
        console.print(f"ingested {ds.tenant_id}: {file.file} ({state})")
    offline = plane.offline.scoped(scope, actor=actor)
    with plane.session(scope, actor=actor, action="stats") as session:
        return TenantData(session).stats(offline)


def _summary(
    console: Console, datasets: list[TenantDataset], stats: dict[str, TenantStats]
) -> None:
    table = Table(title="Tenants per region (data held only in each tenant's home region)")
    for col in ("region", "tenant", "sharing", "items", "users", "interactions", "from", "to"):
        table.add_column(
            col, justify="right" if col in ("items", "users", "interactions") else "left"
        )
    for region in Region:
        here = [d for d in datasets if d.region == region]
        for ds in here:
            s = stats[ds.tenant_id]
            table.add_row(
                region.value,
                ds.tenant_id,
                ds.sharing.value,
                str(s.items),
                str(s.users),
                str(s.interactions),
                _day(s.first_ts),
                _day(s.last_ts),
            )
        if here:
            totals = [stats[d.tenant_id] for d in here]
            table.add_row(
                region.value,
                f"[bold]{len(here)} tenants[/bold]",
                "",
                str(sum(t.items for t in totals)),
                str(sum(t.users for t in totals)),
                str(sum(t.interactions for t in totals)),
                "",
                "",
                end_section=True,
            )
    console.print(table)


def _train_all(
    console: Console, platform: Platform, datasets: list[TenantDataset], actor: str
) -> None:
    """DP training of every tenant in its home region, then a sample and the budgets.

    Regional and global tenants start from their region's federated backbone; solo tenants
    train alone.
    """
    table = Table(
        title="Training (user-level DP, in each tenant's home region; regional and global "
        "tenants start from the region's federated backbone, solo tenants alone)"
    )
    for col in (
        "tenant",
        "region",
        "model version",
        "starts from",
        "epsilon spent / cap",
        "sample for first user",
    ):
        table.add_column(col)
    for ds in datasets:
        scope = platform.scope(ds.tenant_id)
        plane = platform.plane(scope.region)
        latest = plane.artifacts.latest(scope, KIND, actor=actor)
        if latest is None or _files_newer(plane, scope, actor, latest.manifest["created_at"]):
            console.print(f"training {ds.tenant_id} ({ds.n_users} users, {ds.n_items} items) ...")
            trained = train_tenant(platform, ds.tenant_id, actor=actor, promote=True)
            version, parent = trained.model_version, trained.lineage.get("parent_backbone")
        else:
            version, parent = latest.version, latest.manifest["metadata"].get("parent_backbone")
        user = first_user(ds)
        [rec] = recommend_users(platform, ds.tenant_id, [user], 3, actor=actor)
        report = privacy_report(platform, ds.tenant_id, actor=actor)
        table.add_row(
            ds.tenant_id,
            scope.region.value,
            version,
            f"backbone {parent['version']}" if parent else "alone",
            f"{report['epsilon_spent']:.2f} / {report['epsilon_cap']:g}",
            f"{user}: {', '.join(rec.items)}",
        )
    console.print(table)


def _files_newer(plane: Plane, scope: Scope, actor: str, trained_at: str) -> bool:
    """Whether CSV files were ingested after the model was trained.

    Events posted to the serving API also change the data (and the next model's snapshot);
    the demo retrains only for new files, so a re-run spends no budget.
    """
    with plane.session(scope, actor=actor, action="demo.snapshot") as session:
        newest = session.execute(
            select(func.max(IngestBatch.created_at)).where(
                column_of(IngestBatch.kind).in_(("items", "interactions"))
            )
        ).scalar_one()
    if newest is None:
        return False
    newest = newest if newest.tzinfo else newest.replace(tzinfo=UTC)
    return bool(newest > datetime.fromisoformat(trained_at))


def _boundaries(
    console: Console, platform: Platform, datasets: list[TenantDataset], actor: str
) -> None:
    """Show a cross-region access being refused and audited."""
    first, other = datasets[0], next(d for d in datasets if d.region != datasets[0].region)
    wrong = Scope(first.tenant_id, other.region)
    plane = platform.plane(other.region)
    try:
        with plane.session(wrong, actor=actor, action="read"):
            pass
    except BoundaryViolation as exc:
        record = plane.ledger.records(action="boundary.refused", limit=None)[-1]
        console.print(
            f"\nboundary check: scope {wrong} -> refused ({exc}); "
            f"audited in {other.region.value} ledger as record seq={record.seq}"
        )


def _verify(console: Console, platform: Platform) -> None:
    for region in Region:
        result = platform.plane(region).ledger.verify()
        style = "green" if result.ok else "red"
        console.print(f"[{style}]{result.describe(region)}[/{style}]")
