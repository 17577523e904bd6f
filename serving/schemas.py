"""Request and response bodies of the regional serving API (the HTTP contract).

Unknown fields are refused (422) everywhere; ids, texts, numbers and list lengths are
bounded, so a request can never make the server do unbounded work.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from atlasrec.ingest.rows import ID_PATTERN, MAX_ID_LEN
from atlasrec.intents import Intent, Order

MAX_K = 100
MAX_RECENT = 100
MAX_EXCLUDE = 1_000
MAX_EVENTS = 1_000
MAX_ITEMS = 500
MAX_ATTRIBUTES = 50

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN)]
NO_NUL = r"^[^\x00]*$"
"""No NUL characters (PostgreSQL text cannot hold them)."""
Text = Annotated[str, StringConstraints(max_length=20_000, pattern=NO_NUL)]


class Strict(BaseModel):
    """Base: unknown fields are an error; values are not coerced (`"5"` is no number)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Context(Strict):
    """What the client knows about the request's situation."""

    recent_items: list[Id] = Field(
        default_factory=list,
        max_length=MAX_RECENT,
        description="Item ids of the current session, most recent last.",
    )
    user_age: int | None = Field(default=None, ge=0, le=130)
    country: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2 code."
    )

    @field_validator("country")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return None if value is None else value.upper()


class Filters(Strict):
    """Restrictions the client asks for."""

    categories: (
        list[Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]] | None
    ) = Field(default=None, max_length=100)
    exclude_items: list[Id] = Field(default_factory=list, max_length=MAX_EXCLUDE)


class RecommendationRequest(Strict):
    """POST /v1/recommendations."""

    user_id: Id | None = Field(default=None, description="The tenant's own user id.")
    k: int = Field(default=10, ge=1, le=MAX_K)
    context: Context = Field(default_factory=Context)
    filters: Filters = Field(default_factory=Filters)
    intent: Intent | None = Field(
        default=None,
        description="next: what the user does next (recent history); profile: more for the "
        "user's whole history (EASE's item-item weights pooled over it). Absent: the model "
        "version's default order, chosen in training by validation on both questions.",
    )


class ScoredItem(BaseModel):
    """One recommended item."""

    item_id: str
    score: float


class Timings(BaseModel):
    """Milliseconds spent per stage."""

    features: float
    retrieval: float
    ranking: float
    reranking: float
    policy: float
    total: float


class ExperimentArm(BaseModel):
    """An experiment's id and the arm that answered."""

    id: str
    arm: str


class RecommendationResponse(BaseModel):
    """The answer to POST /v1/recommendations."""

    request_id: str
    tenant_id: str
    region: str
    model_version: str
    degraded: bool
    degraded_stages: list[str]
    stale: bool
    """The model is older than the tenant's freshness SLO (`ATLASREC_FRESHNESS_SLO_S`)."""
    cold_start: bool
    intent: Order
    """The order served: `next`, `profile`, `blend` (the default of both) or `popularity`
    (the floor: the model's order scored below popularity on validation); `next` where the
    history has no neighbours."""
    items: list[ScoredItem]
    timings_ms: Timings
    fallback: bool = False
    """Served by the tenant's fallback region while its home is out: non-personal (the user
    id is not used), from a copy of the catalog and its DP popularity (`atlasrec.fallback`)."""
    experiment: ExperimentArm | None = None
    """The running experiment that served it, and its arm (`A`, `B`, ... or `AB` for an
    interleaved list); null outside any experiment."""


class Event(Strict):
    """One interaction."""

    event_id: Id | None = Field(
        default=None,
        description="The client's id for the event: a retry with the same id is stored once. "
        "Default: a new id (a retry is then a second event).",
    )
    user_id: Id
    item_id: Id
    timestamp: float | None = Field(
        default=None, ge=0, lt=4_102_444_800, description="Epoch seconds; default: now."
    )
    event: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=NO_NUL)] = Field(
        default="interaction",
        description="The event's type: view, click, add_to_cart, purchase, interaction, or "
        "one of the tenant's own (`atlasrec tenants event-types`).",
    )
    weight: float | None = Field(
        default=None,
        ge=-1e6,
        le=1e6,
        allow_inf_nan=False,
        description="Default: the event type's weight.",
    )
    request_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = Field(
        default=None,
        description="The recommendation this event responds to (its response's request_id): "
        "only the tenant's own requests are accepted.",
    )
    position: int | None = Field(
        default=None,
        ge=0,
        lt=MAX_K,
        description="The item's 0-based position in that recommendation (needs request_id).",
    )


class EventsRequest(Strict):
    """POST /v1/events."""

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    """The answer to POST /v1/events."""

    request_id: str
    accepted: int
    """Events appended to the region's event log by this request."""
    duplicates: int = 0
    """Events whose id the log already held: acknowledged, stored once."""
    online: bool
    """False when the online store was unreachable: features updated in this process only."""


class CatalogItemIn(Strict):
    """One catalog item to insert or update."""

    item_id: Id
    title: Annotated[str, StringConstraints(min_length=1, max_length=20_000, pattern=NO_NUL)]
    category: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] | None = None
    description: Text | None = None
    attributes: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)],
        Annotated[str, StringConstraints(max_length=1_000, pattern=NO_NUL)]
        | bool
        | int
        | Annotated[float, Field(allow_inf_nan=False)],
    ] = Field(default_factory=dict, max_length=MAX_ATTRIBUTES)

    @field_validator("title")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("title must not be blank")
        return value.strip()


class CatalogRequest(Strict):
    """PUT /v1/catalog/items."""

    items: list[CatalogItemIn] = Field(min_length=1, max_length=MAX_ITEMS)


class CatalogResponse(BaseModel):
    """The answer to PUT /v1/catalog/items."""

    request_id: str
    upserted: int
    model_version: str
    pending: bool = False
    """True (status 202): the region database was down; the upsert is kept in the region's
    log and applied when it is back (a later write of an item wins). Until then the items
    are not recommendable."""


class ErrorBody(BaseModel):
    """Every error response."""

    detail: Any
    request_id: str | None = None
