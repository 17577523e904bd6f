"""Requests to raise a tenant's epsilon cap, kept in the control plane until decided.

Who may request and decide is `audit.access`'s rule; the workflow with its ledger records
is `audit.cap_requests`. Here: the rows, and their state changes as compare-and-sets, so
two officers deciding at once cannot both succeed.
"""

from __future__ import annotations

import secrets
from enum import StrEnum

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from atlasrec.clock import utcnow
from atlasrec.control.tables import CapRaiseRequest


class RequestStatus(StrEnum):
    """Where a raise request stands."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


def mark_approved(session: Session, request_id: str, tenant_id: str, by: str) -> bool:
    """Mark a pending request of `tenant_id` approved by `by` in `session`; whether it was."""
    result = session.execute(
        update(CapRaiseRequest)
        .where(
            col(CapRaiseRequest.id) == request_id,
            col(CapRaiseRequest.tenant_id) == tenant_id,
            col(CapRaiseRequest.status) == RequestStatus.PENDING.value,
        )
        .values(status=RequestStatus.APPROVED.value, decided_by=by, decided_at=utcnow())
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


class CapRequests:
    """The raise requests in the control plane's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(
        self, tenant_id: str, *, cap_then: float, requested_cap: float, reason: str, by: str
    ) -> CapRaiseRequest:
        """A new pending request; the tenant's older pending ones become superseded."""
        request = CapRaiseRequest(
            id=secrets.token_hex(8),
            tenant_id=tenant_id,
            cap_then=cap_then,
            requested_cap=requested_cap,
            reason=reason,
            requested_by=by,
        )
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.execute(
                update(CapRaiseRequest)
                .where(
                    col(CapRaiseRequest.tenant_id) == tenant_id,
                    col(CapRaiseRequest.status) == RequestStatus.PENDING.value,
                )
                .values(status=RequestStatus.SUPERSEDED.value, decided_at=utcnow())
            )
            session.add(request)
        return request

    def remove(self, request_id: str) -> None:
        """Delete a request whose ledger record could not be written (nothing half-done)."""
        with Session(self.engine) as session, session.begin():
            request = session.get(CapRaiseRequest, request_id)
            if request is not None:
                session.delete(request)

    def get(self, request_id: str) -> CapRaiseRequest | None:
        """A request by id."""
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(CapRaiseRequest, request_id)

    def of_tenant(self, tenant_id: str, *, limit: int = 50) -> list[CapRaiseRequest]:
        """A tenant's requests, newest first."""
        query = (
            select(CapRaiseRequest)
            .where(col(CapRaiseRequest.tenant_id) == tenant_id)
            .order_by(col(CapRaiseRequest.requested_at).desc(), col(CapRaiseRequest.id))
            .limit(limit)
        )
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(query).all())

    def pending(self, tenant_ids: list[str]) -> dict[str, CapRaiseRequest]:
        """The pending request of each of `tenant_ids` that has one (one query)."""
        query = select(CapRaiseRequest).where(
            col(CapRaiseRequest.status) == RequestStatus.PENDING.value,
            col(CapRaiseRequest.tenant_id).in_(tenant_ids),
        )
        with Session(self.engine, expire_on_commit=False) as session:
            return {r.tenant_id: r for r in session.exec(query).all()}

    def reject(self, request_id: str, *, by: str, reason: str) -> bool:
        """Mark a pending request rejected; whether it was still pending."""
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                update(CapRaiseRequest)
                .where(
                    col(CapRaiseRequest.id) == request_id,
                    col(CapRaiseRequest.status) == RequestStatus.PENDING.value,
                )
                .values(
                    status=RequestStatus.REJECTED.value,
                    decided_by=by,
                    decided_at=utcnow(),
                    decision_reason=reason,
                )
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def reopen(self, request_id: str) -> None:
        """Put a request back to pending (its decision's ledger record failed to commit)."""
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(CapRaiseRequest)
                .where(col(CapRaiseRequest.id) == request_id)
                .values(
                    status=RequestStatus.PENDING.value,
                    decided_by=None,
                    decided_at=None,
                    decision_reason=None,
                )
            )
