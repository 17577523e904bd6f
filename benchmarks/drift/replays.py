"""A stationary synthetic tenant, its trained model, and replays of its later traffic.

The tenant's interactions are drawn independently of time (`atlasrec.datasets.synthetic`),
so every window after the training rows is unshifted traffic. A shift moves a share of a
window's rows: to one category's items (`category_surge`), to the less popular half of the
catalog (`tail_items`), to users never seen before, one row each (`new_users`, a campaign),
or to 20 new, very active accounts (`bot_users`).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atlasrec.datasets.synthetic import SyntheticTenantSpec, generate_synthetic_tenant
from atlasrec.drift import tenant_drift
from atlasrec.evaluation.drift import SignalDrift
from atlasrec.evaluation.drift_signals import BundleEncoder, Window, drift_signals, split_samples
from atlasrec.ingest import ingest
from atlasrec.models.bundle import KIND, ModelBundle
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope, SharingPolicy

TENANT = "drift-bench"
SAMPLE_CAP = 20_000
Shift = Callable[[Window, np.random.Generator], Window]


@dataclass
class Tenant:
    """The tenant's rows (oldest first), item categories, and its trained model's encoder."""

    users: np.ndarray
    items: np.ndarray
    categories: dict[str, str | None]
    encoder: BundleEncoder
    platform: Platform
    train_s: float


def setup(work: Path, *, trained: int, window: int, windows: int, epsilon: float) -> Tenant:
    """Generate, ingest the first `trained` rows plus two windows, and train with DP."""
    spec = SyntheticTenantSpec(
        TENANT,
        Region.EU,
        SharingPolicy.SOLO,
        n_items=5_000,
        n_users=6_000,
        n_interactions=trained + window * (windows + 1),
    )
    data = generate_synthetic_tenant(spec, work / "data")
    with data.interactions_csv.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    with data.items_csv.open(newline="") as f:
        categories = {r["item_id"]: r["category"] or None for r in csv.DictReader(f)}
    platform = Platform(Settings(home=work / "home"))
    platform.create_tenant(TENANT, region=Region.EU, sharing=SharingPolicy.SOLO, actor="bench")
    _ingest(platform, work / "trained.csv", header, rows[:trained], data.items_csv)
    started = time.perf_counter()
    train_tenant(platform, TENANT, actor="bench", epsilon=epsilon)
    train_s = time.perf_counter() - started
    _ingest(platform, work / "after.csv", header, rows[trained : trained + 2 * window], None)
    scope = Scope(TENANT, Region.EU)
    artifact = platform.plane(Region.EU).artifacts.latest(scope, KIND, actor="bench")
    assert artifact is not None
    encoder = BundleEncoder(ModelBundle.load(artifact))
    users = np.asarray([r[0] for r in rows], dtype=object)
    items = np.asarray([r[1] for r in rows], dtype=object)
    return Tenant(users, items, categories, encoder, platform, train_s)


def _ingest(
    platform: Platform, path: Path, header: list[str], rows: list[list[str]], items: Path | None
) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    scope = Scope(TENANT, Region.EU)
    plane = platform.plane(Region.EU)
    ingest(plane, scope, secret=platform.secret, actor="bench", items=items, interactions=path)


def replay(
    tenant: Tenant, trained: int, window: int, index: int, shift: Shift | None, seed: int
) -> tuple[list[SignalDrift], float]:
    """Window `index` (1, 2, ...) after training against the snapshot; signals and seconds."""
    training = Window(tenant.users[:trained], tenant.items[:trained])
    start = trained + index * window
    first = Window(
        tenant.users[trained : trained + window], tenant.items[trained : trained + window]
    )
    last = Window(tenant.users[start : start + window], tenant.items[start : start + window])
    if shift is not None:
        last = shift(last, np.random.default_rng(seed))
    started = time.perf_counter()
    samples = split_samples(training, first, last, cap=SAMPLE_CAP)
    signals = drift_signals(samples, tenant.categories, tenant.encoder, seed=seed)
    return signals, time.perf_counter() - started


def checked_in_place(tenant: Tenant) -> tuple[dict[str, str], float]:
    """`atlasrec monitor drift`'s path (offline store, catalog, model): statuses, seconds."""
    started = time.perf_counter()
    report = tenant_drift(tenant.platform, TENANT, actor="bench")
    return {s["signal"]: s["status"] for s in report.signals}, time.perf_counter() - started


def shifts(tenant: Tenant, trained: int) -> dict[str, Shift]:
    """The synthetic shifts, each moving `SHARE` of a window's rows."""
    counts: dict[str, int] = {}
    for item in tenant.items[:trained].tolist():
        counts[item] = counts.get(item, 0) + 1
    ranked = sorted(tenant.categories, key=lambda i: -counts.get(i, 0))
    tail = np.asarray(ranked[len(ranked) // 2 :], dtype=object)
    first_category = sorted({c for c in tenant.categories.values() if c})[0]
    surge = np.asarray(
        [i for i, c in tenant.categories.items() if c == first_category], dtype=object
    )
    return {
        "category_surge": _moving(items=surge, share=0.2),
        "tail_items": _moving(items=tail, share=0.3),
        "new_users": _new_users(share=0.3),
        "bot_users": _bots(share=0.3, bots=20),
    }


def _moving(*, items: np.ndarray, share: float) -> Shift:
    def shift(window: Window, rng: np.random.Generator) -> Window:
        moved = rng.random(len(window)) < share
        out = window.items.copy()
        out[moved] = rng.choice(items, int(moved.sum()))
        return Window(window.users, out)

    return shift


def _new_users(*, share: float) -> Shift:
    def shift(window: Window, rng: np.random.Generator) -> Window:
        moved = rng.random(len(window)) < share
        out = window.users.copy()
        out[moved] = [f"new-{n}" for n in range(int(moved.sum()))]
        return Window(out, window.items)

    return shift


def _bots(*, share: float, bots: int) -> Shift:
    def shift(window: Window, rng: np.random.Generator) -> Window:
        moved = rng.random(len(window)) < share
        out = window.users.copy()
        out[moved] = [f"bot-{n}" for n in rng.integers(0, bots, int(moved.sum()))]
        return Window(out, window.items)

    return shift
