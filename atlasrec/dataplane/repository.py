"""`TenantData`: the tenant-scoped reads and writes on a region's tables.

Writes stamp `tenant_id` from the session's scope; callers never supply it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from atlasrec.dataplane.session import TenantSession
from atlasrec.dataplane.tables import IngestBatch, Item, TenantSecret
from atlasrec.offline_store import TenantOffline
from privacy.pseudonymisation import Pseudonymiser, new_tenant_key, unwrap_key, wrap_key

PSEUDONYM_PURPOSE = "pseudonym"


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
        """Insert or update catalog items (the last row for an id wins).

        A row without `written_at` was written now: its `updated_at`.
        """
        if not rows:
            return
        rows = [
            {
                **r,
                "tenant_id": self.scope.tenant_id,
                "written_at": r.get("written_at") or r["updated_at"],
            }
            for r in rows
        ]
        stmt = self._insert(Item)
        columns = ("title", "category", "description", "attributes", "updated_at", "written_at")
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "item_id"],
            set_={c: stmt.excluded[c] for c in columns},
        )
        self.session.execute(stmt, rows)

    def items_written_at(self, ids: Sequence[str]) -> dict[str, datetime]:
        """When each of `ids` held here was written (`written_at`, else `updated_at`)."""
        query = select(Item.item_id, Item.written_at, Item.updated_at).where(
            col(Item.item_id).in_(ids)
        )
        return {i: w or u for i, w, u in self.session.execute(query)}

    def items_updated_at(self, ids: Sequence[str], at: datetime) -> list[str]:
        """Those of `ids` whose item was last written at exactly `at` (by the same load)."""
        query = select(Item.item_id).where(col(Item.item_id).in_(ids), Item.updated_at == at)
        return list(self.session.execute(query).scalars())

    def item_ids(self) -> list[str]:
        """The ids of the tenant's catalog items."""
        return list(self.session.execute(select(Item.item_id)).scalars())

    def stats(self, offline: TenantOffline) -> TenantStats:
        """Counts of items, users and interactions, and the time span of interactions.

        Interactions are those of the tenant's offline store (ingested files and events).
        """
        n_items = self.session.execute(select(func.count()).select_from(Item)).scalar_one()
        table = offline.read_table(["user_key", "ts"])
        users = pc.count_distinct(pc.cast(table["user_key"], pa.string())).as_py()
        first, last = pc.min_max(table["ts"]).values() if table.num_rows else (None, None)
        return TenantStats(
            int(n_items),
            int(users),
            table.num_rows,
            None if first is None else first.as_py(),
            None if last is None else last.as_py(),
        )
