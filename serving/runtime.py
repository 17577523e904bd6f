"""A region's serving runtime: each homed tenant's snapshot, kept fresh in the background.

`RegionRuntime` loads a tenant on its first request (or at start), and a refresher thread
swaps in new model versions (hot swap: the new snapshot is built off the request path and
replaces the old reference in one assignment) and applies catalog changes written by other
processes. Everything a tenant's runtime reads goes through the tenant's scope.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from itertools import groupby

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import func
from sqlmodel import select

from atlasrec.control.tables import Tenant
from atlasrec.dataplane.embeddings import EmbeddedItem, embedded_items
from atlasrec.dataplane.repository import TenantData
from atlasrec.dataplane.tables import Item
from atlasrec.errors import AtlasRecError, CrossRegionError, InvalidInputError
from atlasrec.eventlog.base import EventLogUnavailable
from atlasrec.experiments import running
from atlasrec.fallback import backbone_bundle, copy_version, global_backbone, latest_copy
from atlasrec.http_errors import DATABASE_DOWN
from atlasrec.models.bundle import KIND, ModelBundle
from atlasrec.offline_store import INGEST
from atlasrec.online_store import OnlineStore, OnlineStoreUnavailable, ScopedOnlineStore
from atlasrec.platform import Plane, Platform
from atlasrec.releases import UNSERVABLE, in_flight
from atlasrec.tenancy import Region, Scope
from serving.arms import Arms
from serving.experiment_arms import Trial
from serving.online import RECENT_CAP, Breaker, NoFeatures, OnlineFeatures
from serving.state import CatalogItem, ServingState, build_state, with_items

ACTOR = "serving"
REBUILD_DELTA = 5_000
WARM_CLAIM = "online-features-warm"
WARM_CHUNK = 5_000
log = logging.getLogger("atlasrec.serving")


def _epoch(moment: datetime) -> float:
    """Epoch seconds; naive times (as SQLite returns them) are UTC."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def catalog_items(items: Sequence[EmbeddedItem]) -> list[CatalogItem]:
    """Serving's view of embedded catalog items."""
    return [
        CatalogItem(
            i.item_id, i.category, i.attributes, i.vector, i.content_sha, _epoch(i.updated_at)
        )
        for i in items
    ]


def _no_pseudonym(user_id: str) -> str:
    """A fallback runtime never pseudonymises: user ids are not used there at all."""
    raise AssertionError("a fallback runtime has no users")


class TenantRuntime:
    """One tenant's serving state, online features and pseudonymiser."""

    def __init__(
        self,
        tenant: Tenant,
        scope: Scope,
        state: ServingState,
        online: OnlineFeatures,
        pseudonymise: Callable[[str], str],
        watermark: datetime | None,
        fallback: str | None = None,
    ) -> None:
        self.tenant = tenant
        self.scope = scope
        self.state = state
        self.online = online
        self.pseudonymise = pseudonymise
        self.watermark = watermark
        self.fallback = fallback
        """What answers when this is a fallback runtime (`atlasrec.fallback`): a tenant
        homed elsewhere, served non-personal answers; its scope is never opened.
        `fallback-<copy>`, or `fallback-<copy>+global-<backbone>` scored by the global
        backbone."""
        self.arms: Arms | None = None
        """The release in flight's candidate and its traffic shares (`serving.arms`)."""
        self.trial: Trial | None = None
        """The running experiment's arms and split (`serving.experiment_arms`)."""
        self.served = 0
        """Fallback answers not yet recorded in the ledger."""
        self.lock = threading.Lock()
        """Serialises snapshot builders (requests never take it)."""

    def apply_items(self, items: Sequence[CatalogItem]) -> None:
        """Upsert catalog items into a new snapshot and swap it in."""
        with self.lock:
            self.state = with_items(self.state, items)
            if self.arms is not None:
                self.arms = replace(self.arms, state=with_items(self.arms.state, items))
            if self.trial is not None:
                states = {v: with_items(st, items) for v, st in self.trial.states.items()}
                self.trial = replace(self.trial, states=states)


class RegionRuntime:
    """The serving runtime of one region."""

    def __init__(self, platform: Platform, region: Region, *, online: OnlineStore) -> None:
        self.platform = platform
        self.region = region
        self.plane: Plane = platform.plane(region)
        self.online = online
        self.breaker = Breaker()
        self._tenants: dict[str, TenantRuntime] = {}
        self._fallbacks: dict[str, tuple[tuple[str, str | None], TenantRuntime]] = {}
        """Fallback runtimes by tenant, with the (copy, global backbone) versions they hold."""
        self._retired: list[TenantRuntime] = []
        """Fallback runtimes replaced since the last `audit_fallbacks`."""
        self._loading = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0
        self.freeze_gc = False
        self._unservable_seen: set[tuple[str, str]] = set()
        self._arm_failed: set[tuple[str, str]] = set()
        """(experiment, version) arms that could not load: not retried on every pass."""

    def tenant(self, tenant: Tenant) -> TenantRuntime:
        """The runtime of a tenant homed in this region (loaded on first use)."""
        runtime = self._tenants.get(tenant.id)
        if runtime is not None:
            return runtime
        with self._loading:
            if tenant.id not in self._tenants:
                self._tenants[tenant.id] = self._load(tenant)
            return self._tenants[tenant.id]

    def fallback(self, tenant: Tenant) -> TenantRuntime | None:
        """The fallback runtime of a tenant homed elsewhere (None: no copy published here).

        Loading the copy is admitted by this region's boundary only while the tenant names
        this region as its fallback (audited refusal otherwise); the runtime is rebuilt when
        a newer copy or global backbone is published. Requests read two pointers only.
        """
        version = copy_version(self.platform, self.region, tenant.id)
        if version is None:
            return None
        backbone = global_backbone(self.platform)
        key = (version, backbone)
        loaded = self._fallbacks.get(tenant.id)
        if loaded is not None and loaded[0] == key:
            return loaded[1]
        with self._loading:
            loaded = self._fallbacks.get(tenant.id)
            if loaded is None or loaded[0] != key:
                runtime = self._load_fallback(tenant, backbone)
                if runtime is None:
                    return None
                if loaded is not None:
                    self._retired.append(loaded[1])  # its answers are recorded yet
                loaded = self._fallbacks[tenant.id] = (key, runtime)
            return loaded[1]

    def _load_fallback(self, tenant: Tenant, backbone: str | None) -> TenantRuntime | None:
        copy = latest_copy(self.platform, self.region, tenant.id)
        if copy is None:
            return None
        items = [
            CatalogItem(i["item_id"], i["category"], i["attributes"], v, "", 0.0)
            for i, v in zip(copy.items, copy.vectors, strict=True)
        ]
        bundle = None
        if backbone is not None:
            try:
                bundle = backbone_bundle(self.platform, copy, backbone)
            except InvalidInputError:
                log.exception("serving: fallback of %s scores by content alone", tenant.id)
        return TenantRuntime(
            tenant,
            Scope(tenant.id, Region(tenant.home_region)),
            build_state(items, bundle, copy.released_counts()),
            NoFeatures(),
            _no_pseudonym,
            None,
            fallback=f"fallback-{copy.version}" if bundle is None else bundle.version,
        )

    def audit_fallbacks(self) -> None:
        """One ledger record per fallback tenant served since the last call, with the count."""
        with self._loading:
            retired, self._retired = self._retired, []
        for runtime in [*retired, *(loaded for _, loaded in list(self._fallbacks.values()))]:
            with runtime.lock:
                served, runtime.served = runtime.served, 0
            if served:
                self.plane.ledger.append(
                    actor=ACTOR,
                    action="serving.fallback",
                    subject=f"tenant:{runtime.tenant.id}",
                    tenant_id=runtime.tenant.id,
                    details={
                        "answers": served,
                        "model": runtime.fallback,
                        "home": runtime.scope.region.value,
                    },
                )

    def loaded_tenant(self, tenant_id: str) -> TenantRuntime | None:
        """The runtime of a tenant already loaded, without loading it."""
        return self._tenants.get(tenant_id)

    def loaded(self) -> list[TenantRuntime]:
        """The tenants loaded so far."""
        return list(self._tenants.values())

    def _scope(self, tenant: Tenant) -> Scope:
        if Region(tenant.home_region) != self.region:
            raise CrossRegionError(
                f"tenant {tenant.id!r} is homed in region {Region(tenant.home_region).value!r}"
            )
        return Scope(tenant.id, self.region)

    def _bundle(self, scope: Scope) -> ModelBundle | None:
        artifact = self.plane.artifacts.latest(scope, KIND, actor=ACTOR)
        return None if artifact is None else ModelBundle.load(artifact)

    def _build(
        self, scope: Scope, bundle: ModelBundle | None
    ) -> tuple[ServingState, datetime | None]:
        items = embedded_items(self.plane, scope, actor=ACTOR)
        watermark = max((i.updated_at for i in items), default=None)
        return build_state(catalog_items(items), bundle, self._counts(scope)), watermark

    def _counts(self, scope: Scope) -> dict[str, float]:
        """Summed weights per item of the ingested rows (the offline store's ingested files)."""
        offline = self.plane.offline.scoped(scope, actor=ACTOR)
        table = offline.read_table(["item_id", "weight"], files=offline.ingested_files())
        table = table.set_column(0, "item_id", pc.cast(table["item_id"], pa.string()))
        sums = table.group_by("item_id").aggregate([("weight", "sum")])
        return dict(zip(sums["item_id"].to_pylist(), sums["weight_sum"].to_pylist(), strict=True))

    def _load(self, tenant: Tenant) -> TenantRuntime:
        scope = self._scope(tenant)
        state, watermark = self._build(scope, self._bundle(scope))
        with self.plane.session(scope, actor=ACTOR, action="serving.load") as session:
            pseudonymiser = TenantData(session).pseudonymiser(self.platform.secret)
        store = self.online.scoped(scope, actor=ACTOR)
        try:
            self._warm(scope, store)
        except (OnlineStoreUnavailable, EventLogUnavailable) as exc:
            log.warning("serving %s: online features not warmed: %s", tenant.id, exc)
        log.info("serving %s: model %s, %d items", tenant.id, state.model_version, state.size)
        runtime = TenantRuntime(
            tenant, scope, state, OnlineFeatures(store, self.breaker), pseudonymiser, watermark
        )
        self._refresh_arms(runtime)
        self._refresh_trial(runtime)
        return runtime

    def _warm(self, scope: Scope, store: ScopedOnlineStore) -> None:
        """Materialise the tenant's online features, once per store, oldest first.

        The first process to claim the tenant's (empty) online state applies the ingested
        interactions, then the offline store's events, then the event log's retained events
        (each logged event once, by sequence number: what the offline store already held
        is skipped). Later processes find the claim and skip; new events reach the store
        through POST /v1/events and the online consumer.
        """
        if not store.claim(WARM_CLAIM):
            return
        try:
            self._warm_ingested(scope, store)
            self._warm_offline(scope, store)
            self._warm_log(scope, store)
        except BaseException:
            store.release(WARM_CLAIM)
            raise

    def _warm_ingested(self, scope: Scope, store: ScopedOnlineStore) -> None:
        """Apply the ingested files' rows, oldest first, each chunk once (`record_marked`).

        A date partition's ingested files are read together, in time order. The files are
        immutable (compaction leaves them alone), so (partition, its files, chunk number)
        names the same rows on every attempt: a warm-up retried after a failure, or by
        another process, applies nothing twice.
        """
        columns = ["user_key", "item_id", "weight", "ts"]
        offline = self.plane.offline.scoped(scope, actor=ACTOR)
        for partition, group in groupby(offline.ingested_files(), key=lambda f: f.parent.name):
            files = list(group)
            table = offline.read_table(columns, files=files).sort_by("ts")
            names = hashlib.sha256(",".join(f.name for f in files).encode()).hexdigest()
            mark = f"{partition}/{names[:32]}"
            for chunk, batch in enumerate(table.to_batches(max_chunksize=WARM_CHUNK)):
                user, item, weight, ts = (batch.column(c).to_pylist() for c in columns)
                events = [
                    (u, i, float(w), float(t))
                    for u, i, w, t in zip(user, item, weight, ts, strict=True)
                ]
                store.record_marked(events, mark, chunk, cap=RECENT_CAP)

    def _warm_offline(self, scope: Scope, store: ScopedOnlineStore) -> None:
        columns = ["seq", "user_key", "item_id", "weight", "ts"]
        offline = self.plane.offline.scoped(scope, actor=ACTOR)
        logged = [f for f in offline.files() if not f.name.startswith(INGEST)]
        table = offline.read_table(columns, files=logged).sort_by(
            [("ts", "ascending"), ("seq", "ascending")]
        )
        log_id = self.plane.events.log_id
        for batch in table.to_batches(max_chunksize=WARM_CHUNK):
            seq, user, item, weight, ts = (batch.column(c).to_pylist() for c in columns)
            events = [
                (u, i, float(w), float(t))
                for u, i, w, t in zip(user, item, weight, ts, strict=True)
            ]
            store.record_logged(events, seq, log_id=log_id, cap=RECENT_CAP)

    def _warm_log(self, scope: Scope, store: ScopedOnlineStore) -> None:
        log_, start = self.plane.events, 1
        while batch := log_.read(scope, start, WARM_CHUNK):
            features = [d.event.feature() for d in batch]
            store.record_logged(
                features, [d.seq for d in batch], log_id=log_.log_id, cap=RECENT_CAP
            )
            start = batch[-1].seq + 1

    # background refresh -----------------------------------------------------------------

    def refresh(self, runtime: TenantRuntime) -> bool:
        """Swap in a newer model or catalog changes; True if the snapshot changed.

        Also re-materialises the online features if the online store lost them (a Redis
        restart): the warm-up claim is gone then, and this process takes it.
        """
        scope = runtime.scope
        try:
            self._warm(scope, runtime.online.store)
        except (OnlineStoreUnavailable, EventLogUnavailable) as exc:
            log.warning("serving %s: online features not warmed: %s", scope.tenant_id, exc)
        artifact = self.plane.artifacts.latest(scope, KIND, actor=ACTOR)
        current = runtime.state
        if artifact is not None and artifact.version != current.model_version:
            bundle = ModelBundle.load(artifact)
            state, watermark = self._build(scope, bundle)
            with runtime.lock:
                runtime.state, runtime.watermark = state, watermark
            self.swaps += 1
            log.info("serving %s: swapped in model %s", scope.tenant_id, artifact.version)
            return True
        if current.size - current.indexed > REBUILD_DELTA:
            state, watermark = self._build(scope, self._bundle(scope))
            with runtime.lock:
                runtime.state, runtime.watermark = state, watermark
            return True
        arms, trial = self._refresh_arms(runtime), self._refresh_trial(runtime)
        return arms | trial | self._sync_catalog(runtime)

    def _refresh_arms(self, runtime: TenantRuntime) -> bool:
        """Follow the tenant's release in flight: load its candidate, take its shares."""
        scope, arms = runtime.scope, runtime.arms
        release = in_flight(self.plane, scope, actor=ACTOR)
        if release is None:
            runtime.arms = None
            return arms is not None
        if arms is not None and arms.version == release.version:
            state = arms.state
        else:
            try:
                artifact = self.plane.artifacts.get(scope, KIND, release.version, actor=ACTOR)
                state, _ = self._build(scope, ModelBundle.load(artifact))
            except Exception as exc:  # a candidate that cannot be served: live serves all
                self._unservable(scope, release.version, exc)
                runtime.arms = None
                return arms is not None
            log.info("serving %s: release %s in flight", scope.tenant_id, release.version)
        runtime.arms = Arms.of(release.version, state, release.state, release.plan or {})
        return arms is None or runtime.arms.shares != arms.shares

    def _refresh_trial(self, runtime: TenantRuntime) -> bool:
        """Follow the tenant's running experiment: load its arms' versions, take its split.

        The live version's arm serves from the tenant's current snapshot; every other arm's
        version is loaded once. An arm that cannot load ends nothing and is not retried: its
        users get live answers (degraded) until the experiment is stopped.
        """
        scope, trial = runtime.scope, runtime.trial
        row = running(self.plane, scope, actor=ACTOR)
        if row is None:
            runtime.trial = None
            return trial is not None
        held = dict(trial.states) if trial is not None and trial.id == row.id else {}
        live = runtime.state.model_version
        states = {}
        for version in row.arms:
            if version == live:
                continue
            if version not in held:
                if (row.id, version) in self._arm_failed:
                    continue  # tried once for this experiment: not reloaded every pass
                try:
                    artifact = self.plane.artifacts.get(scope, KIND, version, actor=ACTOR)
                    held[version], _ = self._build(scope, ModelBundle.load(artifact))
                except Exception as exc:  # the arm answers with live, degraded
                    log.error("serving %s: experiment arm %s: %s", scope.tenant_id, version, exc)
                    self._arm_failed.add((row.id, version))
                    continue
            states[version] = held[version]
        runtime.trial = Trial.of(row, states)
        return trial is None or trial.id != row.id or set(states) != set(trial.states)

    def _unservable(self, scope: Scope, version: str, exc: Exception) -> None:
        """Record (once per process and version) that a release's candidate cannot load."""
        log.error("serving %s: candidate %s cannot be served: %s", scope.tenant_id, version, exc)
        if (scope.tenant_id, version) in self._unservable_seen:
            return
        self._unservable_seen.add((scope.tenant_id, version))
        self.plane.ledger.append(
            actor=ACTOR,
            action=UNSERVABLE,
            subject=f"model:{KIND}/{version}",
            tenant_id=scope.tenant_id,
            details={"version": version, "error": f"{type(exc).__name__}: {exc}"[:500]},
        )

    def _sync_catalog(self, runtime: TenantRuntime) -> bool:
        scope = runtime.scope
        with self.plane.session(scope, actor=ACTOR, action="serving.sync") as session:
            newest = session.execute(select(func.max(Item.updated_at))).scalar_one()
        if newest is None or (runtime.watermark is not None and newest <= runtime.watermark):
            return False
        changed = embedded_items(self.plane, scope, actor=ACTOR, since=runtime.watermark)
        if changed:
            runtime.apply_items(catalog_items(changed))
            runtime.watermark = max(i.updated_at for i in changed)
        return bool(changed)

    def freeze(self) -> None:
        """Collect, then exclude every object alive now from future collections."""
        gc.collect()
        gc.freeze()

    def refresh_all(self) -> None:
        """One refresh pass over every loaded tenant; a failing tenant does not stop the rest.

        Fallback answers served since the last pass are recorded in the ledger first.
        """
        try:
            self.audit_fallbacks()
        except Exception:
            log.exception("serving: fallback answers not recorded yet")
        for runtime in self.loaded():
            try:
                if self.refresh(runtime) and self.freeze_gc:
                    self.freeze()
            except AtlasRecError as exc:
                log.warning("serving %s: refresh failed: %s", runtime.scope.tenant_id, exc)
            except DATABASE_DOWN as exc:  # serving goes on from the snapshot it holds
                log.warning(
                    "serving %s: refresh failed, the database is unavailable: %s",
                    runtime.scope.tenant_id,
                    str(exc).splitlines()[0],
                )
            except Exception:
                log.exception("serving %s: refresh failed", runtime.scope.tenant_id)

    def start(self, interval_s: float) -> None:
        """Start the background refresher."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.refresh_all()

        self._thread = threading.Thread(target=loop, name="serving-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the refresher (waits for a pass in progress); record the last fallback answers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.audit_fallbacks()
        except Exception:
            log.exception("serving: fallback answers not recorded")
