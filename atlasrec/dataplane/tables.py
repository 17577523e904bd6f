"""Tables of a region's data plane. Every tenant table carries `tenant_id`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKeyConstraint, Index, LargeBinary, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from atlasrec.clock import utcnow


class RegionModel(SQLModel, registry=registry()):
    """Base of the data-plane tables (their own metadata, apart from the control plane)."""


class Item(RegionModel, table=True):
    """A catalog item of one tenant."""

    __tablename__ = "items"
    tenant_id: str = Field(primary_key=True, max_length=63)
    item_id: str = Field(primary_key=True, max_length=256)
    title: str = Field(sa_column=Column(Text, nullable=False))
    category: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, sa_column=Column(Text))
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    updated_at: datetime = Field(default_factory=utcnow)
    """When the row last changed here (serving's catalog refresh follows it)."""
    written_at: datetime | None = None
    """When its writer's write was accepted (None: `updated_at`); orders deferred writes."""


class Interaction(RegionModel, table=True):
    """One interaction event; the user is known only by a per-tenant pseudonym."""

    __tablename__ = "interactions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "item_id"], ["items.tenant_id", "items.item_id"], ondelete="CASCADE"
        ),
        Index("ix_interactions_tenant_ts", "tenant_id", "ts"),
    )
    tenant_id: str = Field(primary_key=True, max_length=63)
    user_key: str = Field(primary_key=True, max_length=64)
    item_id: str = Field(primary_key=True, max_length=256)
    ts: int = Field(primary_key=True, sa_type=BigInteger)
    event: str = Field(primary_key=True, max_length=32)
    weight: float = 1.0
    batch_id: str = Field(max_length=32)


class IngestBatch(RegionModel, table=True):
    """One ingested file: its content hash makes re-ingesting the same file a no-op."""

    __tablename__ = "ingest_batches"
    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(index=True, max_length=63)
    kind: str = Field(max_length=16)
    sha256: str = Field(max_length=64)
    filename: str = Field(max_length=255)
    rows: int
    inserted: int
    created_at: datetime = Field(default_factory=utcnow)


class TenantSecret(RegionModel, table=True):
    """A tenant's secret key, wrapped with the region's key; it never leaves the region."""

    __tablename__ = "tenant_secrets"
    tenant_id: str = Field(primary_key=True, max_length=63)
    purpose: str = Field(primary_key=True, max_length=32)
    wrapped_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class AuditRecord(RegionModel, table=True):
    """One record of the region's append-only, hash-chained audit ledger."""

    __tablename__ = "audit_records"
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    ts: str = Field(max_length=40)
    tenant_id: str | None = Field(default=None, index=True, max_length=63)
    region: str = Field(max_length=8)
    actor: str = Field(max_length=200)
    action: str = Field(index=True, max_length=64)
    subject: str = Field(sa_column=Column(Text, nullable=False))
    details: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class AuditRecordTenant(RegionModel, table=True):
    """A tenant an audit record concerns: the ledger's index for searching by tenant.

    Written with the record (`audit.ledger`), by `atlasrec.dataplane.audit_tenants`' rule;
    the record itself, and its hash, do not change.
    """

    __tablename__ = "audit_record_tenants"
    __table_args__ = (Index("ix_audit_record_tenants_tenant_id", "tenant_id", "seq"),)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    tenant_id: str = Field(primary_key=True, max_length=63)


class ItemEmbedding(RegionModel, table=True):
    """A cached text embedding of an item's content, keyed by encoder and content hash."""

    __tablename__ = "item_embeddings"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "item_id"], ["items.tenant_id", "items.item_id"], ondelete="CASCADE"
        ),
    )
    tenant_id: str = Field(primary_key=True, max_length=63)
    item_id: str = Field(primary_key=True, max_length=256)
    encoder: str = Field(primary_key=True, max_length=64)
    content_sha: str = Field(max_length=64)
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class DpRun(RegionModel, table=True):
    """One differentially private computation charged to a tenant's budget."""

    __tablename__ = "dp_runs"
    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(index=True, max_length=63)
    kind: str = Field(max_length=32)
    status: str = Field(max_length=16)
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon: float
    epsilon_total: float
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None


class ServedRequest(RegionModel, table=True):
    """One served recommendation request: what was answered, by which model, how fast."""

    __tablename__ = "served_requests"
    __table_args__ = (Index("ix_served_requests_tenant_served_at", "tenant_id", "served_at"),)
    request_id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(max_length=63)
    served_at: datetime
    model_version: str | None = Field(default=None, max_length=64)
    user_key: str | None = Field(default=None, max_length=64)
    k: int
    items: list[str] = Field(sa_column=Column(JSON, nullable=False))
    cold_start: bool
    degraded: list[str] = Field(sa_column=Column(JSON, nullable=False))
    timings_ms: dict[str, float] = Field(sa_column=Column(JSON, nullable=False))
    intent: str = Field(default="next", max_length=16, sa_column_kwargs={"server_default": "next"})
    """The order served (`atlasrec.intents`): `next`, or `profile` where asked and possible."""
    arm: str = Field(default="live", max_length=8, sa_column_kwargs={"server_default": "live"})
    """Who answered: `live`, `canary` (a release's canary share), or `shadow` (scored by a
    release in shadow beside a live answer, never returned)."""
    shadow_of: str | None = Field(default=None, max_length=32)
    """A shadow record's live request."""
    policy_violations: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    """A shadow answer's items its request's context forbids (the shadow gate wants 0)."""
    experiment_id: str | None = Field(default=None, max_length=16)
    """The experiment (`atlasrec.experiments`) whose arm served it; `arm` names the arm."""
    teams: str | None = Field(default=None, max_length=100)
    """An interleaved list's team per position: `A` or `B` (team-draft interleaving)."""


class ModelRelease(RegionModel, table=True):
    """A model version's place in its tenant's release lifecycle (`atlasrec.releases`)."""

    __tablename__ = "model_releases"
    tenant_id: str = Field(primary_key=True, max_length=63)
    version: str = Field(primary_key=True, max_length=64)
    state: str = Field(max_length=16)
    """`candidate`, `shadow`, `canary`, `live`, `retired` or `rolled_back`."""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    """Why it entered its state (a person's reason, or the gate that decided)."""
    plan: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """A release in flight's plan: shadow share, canary steps and the step it is at, salt."""


class Experiment(RegionModel, table=True):
    """An A/B or interleaving experiment on a tenant's traffic (`atlasrec.experiments`)."""

    __tablename__ = "experiments"
    tenant_id: str = Field(primary_key=True, max_length=63)
    id: str = Field(primary_key=True, max_length=16)
    kind: str = Field(max_length=16)
    """`ab` or `interleave`."""
    metric: str = Field(max_length=16)
    arms: list[str] = Field(sa_column=Column(JSON, nullable=False))
    """The model version of each arm, in arm order (`A`, `B`, ...); `A` is the control."""
    split: list[float] = Field(sa_column=Column(JSON, nullable=False))
    """Percent of users each arm serves (A/B); interleaving mixes both in every list."""
    salt: str = Field(max_length=32)
    state: str = Field(max_length=16)
    """`running`, `decided` (the analysis reached a decision), `invalid` (its sample ratio
    check failed) or `stopped` (by a person)."""
    created_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """The last analysis: per arm numbers, the test's statistic and the decision."""


class OnlineMetric(RegionModel, table=True):
    """One day's online metrics of one model version of a tenant (`atlasrec.outcomes`)."""

    __tablename__ = "online_metrics"
    tenant_id: str = Field(primary_key=True, max_length=63)
    day: str = Field(primary_key=True, max_length=10)
    """The UTC day the requests were served (YYYY-MM-DD)."""
    model_version: str = Field(primary_key=True, max_length=64)
    k: int
    figures: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    """`atlasrec.evaluation.online.ArmDay`'s fields."""
    computed_at: datetime = Field(default_factory=utcnow)


class FederationRun(RegionModel, table=True):
    """One `federate` run of the region's aggregator (not a tenant table: no user data).

    `rounds` lists each completed round: participants and the epsilon each was charged,
    refusals, exclusions, dropped and failed updates, and the backbone version out.
    """

    __tablename__ = "federation_runs"
    id: str = Field(primary_key=True, max_length=32)
    region: str = Field(max_length=8)
    status: str = Field(max_length=16, index=True)
    rounds_planned: int
    rounds_done: int = 0
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    backbone_in: str | None = Field(default=None, max_length=64)
    backbone_out: str | None = Field(default=None, max_length=64)
    rounds: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    started_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


TENANT_TABLES: tuple[type[RegionModel], ...] = (
    Item,
    Interaction,
    IngestBatch,
    TenantSecret,
    ItemEmbedding,
    DpRun,
    ServedRequest,
    OnlineMetric,
    ModelRelease,
)
"""Tables whose rows belong to one tenant: scoped sessions filter them, and PostgreSQL
row-level security guards them."""
