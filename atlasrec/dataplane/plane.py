"""`RegionDataPlane`: one region's database, ledger, artifacts and the scoped way in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from atlasrec.artifacts import ArtifactStore
from atlasrec.boundary import AuditLog, Boundary
from atlasrec.control.service import ControlPlane
from atlasrec.dataplane.session import TenantSession
from atlasrec.db import is_lock_timeout, is_postgres, make_engine
from atlasrec.errors import UnavailableError
from atlasrec.eventlog.base import EventLog
from atlasrec.eventlog.regional import open_event_log
from atlasrec.migrations import upgrade
from atlasrec.offline_store import OfflineStore
from atlasrec.online_store import OnlineStore, make_backend
from atlasrec.request_ids import RequestIds
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope

L = TypeVar("L", bound=AuditLog)


class RegionDataPlane(Generic[L]):
    """The only place a region's tenant data exists; every access is made under a scope.

    `ledger` opens the region's audit log on its database (the platform passes the
    hash-chained `audit.ledger.AuditLedger`); every refusal at the boundary goes there.
    """

    def __init__(
        self,
        region: Region,
        settings: Settings,
        control: ControlPlane,
        ledger: Callable[[Engine], L],
    ) -> None:
        self.region = region
        self.settings = settings
        url = settings.region_url(region)
        wait = settings.db_lock_wait_s
        self.engine = make_engine(url, lock_wait_s=wait)
        self.tenant_engine = (
            make_engine(url, user=settings.pg_app_role, lock_wait_s=wait)
            if is_postgres(self.engine)
            else self.engine
        )
        self.ledger = ledger(self.engine)
        self.boundary = Boundary(
            region,
            self.ledger,
            control.home_region_of,
            control.fallback_region_of,
            RequestIds(settings.secret_key.get_secret_value().encode(), region),
        )
        self.artifacts = ArtifactStore(
            region, settings.region_dir(region) / "artifacts", self.boundary
        )
        self.online = OnlineStore(region, make_backend(settings.redis_url), self.boundary)

    @cached_property
    def events(self) -> EventLog:
        """The region's event log (opened on first use: JetStream or the embedded file)."""
        return open_event_log(self.settings, self.boundary)

    @cached_property
    def offline(self) -> OfflineStore:
        """The region's offline store: events and interactions as Parquet by tenant and date."""
        return OfflineStore(self.settings.offline_root(), self.boundary)

    def migrate(self) -> None:
        """Bring this region's schema up to date."""
        upgrade(self.engine, "region", app_role=self.settings.pg_app_role)

    @contextmanager
    def session(self, scope: Scope, *, actor: str, action: str) -> Iterator[TenantSession]:
        """A transaction scoped to one tenant: commits on success, rolls back on error.

        A lock wait past `db_lock_wait_s` is an `UnavailableError` (nothing was written).
        """
        self.boundary.admit(scope, actor=actor, action=action)
        try:
            with (
                TenantSession(
                    self.tenant_engine, scope=scope, boundary=self.boundary, actor=actor
                ) as session,
                session.begin(),
            ):
                yield session
        except OperationalError as exc:
            if not is_lock_timeout(exc):
                raise
            raise UnavailableError(
                f"tenant {scope.tenant_id!r}: region {self.region.value!r} database is busy "
                f"(a lock held for longer than the wait allowed): nothing was written, retry"
            ) from exc

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()
        self.tenant_engine.dispose()
        self.online.backend.close()
        if "events" in self.__dict__:
            self.events.close()
