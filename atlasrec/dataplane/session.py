"""`TenantSession`: a database session bound to one scope.

It adds the scope's tenant filter to every ORM select, update and delete on tenant tables,
refuses (and audits) writes of another tenant's rows, and on PostgreSQL binds the
transaction to the tenant so that row-level security covers hand-written SQL too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.orm import ORMExecuteState, SessionTransaction, with_loader_criteria
from sqlmodel import Session

from atlasrec.boundary import Boundary
from atlasrec.dataplane.tables import TENANT_TABLES
from atlasrec.errors import CrossTenantError
from atlasrec.tenancy import Scope


class TenantSession(Session):
    """A session that can only see and write the rows of its scope's tenant."""

    def __init__(self, engine: Engine, *, scope: Scope, boundary: Boundary, actor: str) -> None:
        super().__init__(engine, expire_on_commit=False)
        self.scope = scope
        self.boundary = boundary
        self.actor = actor

    def refuse_foreign(self, tenant_id: str, action: str, subject: str) -> None:
        """Audit and refuse an attempt on another tenant's rows."""
        self.boundary.refuse(
            self.scope,
            CrossTenantError(f"scope {self.scope} cannot {action} rows of tenant {tenant_id!r}"),
            actor=self.actor,
            action=action,
            subject=subject,
            target_tenant=tenant_id,
        )


@event.listens_for(TenantSession, "after_begin")
def _bind_tenant(session: TenantSession, _tx: SessionTransaction, connection: Any) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT set_config('atlasrec.tenant_id', :t, true)"),
            {"t": session.scope.tenant_id},
        )


@event.listens_for(TenantSession, "do_orm_execute")
def _filter_tenant(state: ORMExecuteState) -> None:
    session = state.session
    assert isinstance(session, TenantSession)
    tenant_id = session.scope.tenant_id
    if state.is_select or state.is_update or state.is_delete:
        state.statement = state.statement.options(
            *(
                with_loader_criteria(
                    table, lambda cls: cls.tenant_id == tenant_id, include_aliases=True
                )
                for table in TENANT_TABLES
            )
        )
    elif state.is_insert:
        params = state.parameters
        rows: list[Any] = list(params) if isinstance(params, list) else [params] if params else []
        for row in rows:
            foreign = row.get("tenant_id")
            if foreign is not None and foreign != tenant_id:
                session.refuse_foreign(foreign, "insert", "bulk insert")


@event.listens_for(TenantSession, "before_flush")
def _guard_writes(session: TenantSession, _ctx: Any, _instances: Any) -> None:
    for verb, objects in (
        ("insert", session.new),
        ("update", session.dirty),
        ("delete", session.deleted),
    ):
        for obj in objects:
            owner = getattr(obj, "tenant_id", None) if isinstance(obj, TENANT_TABLES) else None
            if owner is not None and owner != session.scope.tenant_id:
                session.refuse_foreign(owner, verb, type(obj).__name__)
