"""`TenantData`: the tenant-scoped reads and writes on a region's tables.

Writes stamp `tenant_id` from the session's scope; callers never supply it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from atlasrec.dataplane.session import TenantSession
from atlasrec.dataplane.tables import IngestBatch, Interaction, Item, TenantSecret
from privacy.pseudonymisation import Pseudonymiser, new_tenant_key, unwrap_key, wrap_key

PSEUDONYM_PURPOSE = "pseudonym"
_COPY_COLUMNS = "tenant_id, user_key, item_id, ts, event, weight, batch_id"


@dataclass(frozen=True)
class TenantStats:
    """Sizes of a tenant's data in its region."""

    items: int
    users: int
    interactions: int
    first_ts: int | None
    last_ts: int | None


class TenantData:
    """Reads and writes of one tenant's rows, through a `TenantSession`."""

    def __init__(self, session: TenantSession) -> None:
        self.session = session
        self.scope = session.scope

    def _insert(self, model: type[Any]) -> Any:
        dialect = self.session.get_bind().dialect.name
        return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)

    def pseudonymiser(self, secret: bytes) -> Pseudonymiser:
        """The tenant's pseudonymiser; its key is created here, in the region, on first use."""
        row = self.session.get(TenantSecret, (self.scope.tenant_id, PSEUDONYM_PURPOSE))
        if row is None:
            key = new_tenant_key()
            row = TenantSecret(
                tenant_id=self.scope.tenant_id,
                purpose=PSEUDONYM_PURPOSE,
                wrapped_key=wrap_key(secret, self.scope, key),
            )
            self.session.add(row)
            self.session.flush()
            return Pseudonymiser(key)
        return Pseudonymiser(unwrap_key(secret, self.scope, row.wrapped_key))

    def find_batch(self, kind: str, sha256: str) -> IngestBatch | None:
        """A previous ingest of the same file content, if any."""
        query = select(IngestBatch).where(IngestBatch.kind == kind, IngestBatch.sha256 == sha256)
        return self.session.execute(query).scalars().first()

    def add_batch(self, batch: IngestBatch) -> None:
        """Record an ingested file."""
        batch.tenant_id = self.scope.tenant_id
        self.session.add(batch)

    def upsert_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or update catalog items (the last row for an id wins)."""
        if not rows:
            return
        rows = [{**r, "tenant_id": self.scope.tenant_id} for r in rows]
        stmt = self._insert(Item)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "item_id"],
            set_={
                c: stmt.excluded[c]
                for c in ("title", "category", "description", "attributes", "updated_at")
            },
        )
        self.session.execute(stmt, rows)

    def known_item_ids(self, item_ids: Iterable[str]) -> set[str]:
        """Those of `item_ids` that are in the tenant's catalog."""
        ids = list(set(item_ids))
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            query = select(Item.item_id).where(col(Item.item_id).in_(ids[start : start + 500]))
            found.update(self.session.execute(query).scalars())
        return found

    def insert_interactions(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert interactions, ignoring exact duplicates; return how many were new."""
        if not rows:
            return 0
        if self.session.get_bind().dialect.name == "postgresql":
            return self._copy_interactions(rows)
        rows = [{**r, "tenant_id": self.scope.tenant_id} for r in rows]
        stmt = self._insert(Interaction).on_conflict_do_nothing().returning(Interaction.ts)
        return len(self.session.execute(stmt, rows).all())

    def _copy_interactions(self, rows: Sequence[dict[str, Any]]) -> int:
        """PostgreSQL: COPY into a transaction-local staging table, then one INSERT ... SELECT.

        About 7x faster than multi-row VALUES; row-level security and the foreign key still
        check every row, since the INSERT runs in this tenant-bound transaction.
        """
        raw = self.session.connection().connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _staged_interactions "
                "(LIKE interactions) ON COMMIT DROP"
            )
            with cur.copy(f"COPY _staged_interactions ({_COPY_COLUMNS}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(
                        (
                            self.scope.tenant_id,
                            r["user_key"],
                            r["item_id"],
                            r["ts"],
                            r["event"],
                            r["weight"],
                            r["batch_id"],
                        )
                    )
            cur.execute(
                f"INSERT INTO interactions ({_COPY_COLUMNS}) "  # noqa: S608 - constant columns
                f"SELECT {_COPY_COLUMNS} FROM _staged_interactions ON CONFLICT DO NOTHING"
            )
            inserted = cur.rowcount
            cur.execute("TRUNCATE _staged_interactions")
        return int(inserted)

    def stats(self) -> TenantStats:
        """Counts of items, users and interactions, and the time span of interactions."""
        n_items = self.session.execute(select(func.count()).select_from(Item)).scalar_one()
        users, interactions, first, last = self.session.execute(
            select(
                func.count(func.distinct(Interaction.user_key)),
                func.count(),
                func.min(Interaction.ts),
                func.max(Interaction.ts),
            ).select_from(Interaction)
        ).one()
        return TenantStats(int(n_items), int(users), int(interactions), first, last)
