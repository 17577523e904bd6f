"""What federated clients and aggregators put in Flower messages, and how they read it.

- Train message (aggregator -> client): `arrays` holds the round's starting backbone, as a
  seed (first round of a new federation: every client builds the same initial backbone) or
  as the previous round's aggregate `sum` with its `weight` (a CKKS ciphertext under the
  region's key, or a float32 vector when encryption is off); `config` holds the `RoundPlan`.
- Train reply (client -> aggregator): `arrays["update"]` is the client's weighted backbone
  (`weight x parameters`, encrypted), `arrays["global"]` the same under the global key for a
  `global` tenant; `metrics` the weight, users and epsilon charged; `tags` who sent it.
- Query (aggregator -> client, before each round): `status` answers with the client's
  tenant, region, policy and whether the round fits its budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from atlasrec.errors import InvalidInputError
from privacy.budget import BudgetState

ARRAYS, CONFIG, METRICS, TAGS, STATUS = "arrays", "config", "metrics", "tags", "status"
SEED, SUM, WEIGHT, UPDATE, GLOBAL = "seed", "sum", "weight", "update", "global"
ENCRYPTED = "encrypted"


def scalar(value: object, kind: type[int] | type[float]) -> int | float:
    """A record value as a number, or InvalidInputError."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInputError(f"expected a number, got {value!r}")
    return kind(value)


def blob_array(data: bytes) -> Array:
    """Opaque bytes (a ciphertext) as a Flower array."""
    return Array(np.frombuffer(data, dtype=np.uint8))


def array_blob(array: Array) -> bytes:
    """The bytes of `blob_array`."""
    values = array.numpy()
    if values.dtype != np.uint8 or values.ndim != 1:
        raise InvalidInputError("expected an opaque byte array in the message")
    return values.tobytes()


@dataclass(frozen=True)
class Start:
    """The backbone a round starts from, as carried in a train message."""

    seed: int | None = None
    payload: bytes | np.ndarray | None = None
    weight: float = 0.0

    def to_record(self) -> ArrayRecord:
        """As the `arrays` record of a train message."""
        if self.seed is not None:
            return ArrayRecord({SEED: Array(np.array([self.seed], dtype=np.int64))})
        if self.payload is None:
            raise InvalidInputError("a round start needs a seed or an aggregate")
        body = (
            blob_array(self.payload)
            if isinstance(self.payload, bytes)
            else Array(np.asarray(self.payload, dtype=np.float32))
        )
        return ArrayRecord({SUM: body, WEIGHT: Array(np.array([self.weight], dtype=np.float64))})

    @classmethod
    def from_record(cls, record: ArrayRecord, *, encrypted: bool) -> Start:
        """Read the `arrays` record of a train message."""
        if SEED in record:
            return cls(seed=int(record[SEED].numpy()[0]))
        if SUM not in record or WEIGHT not in record:
            raise InvalidInputError("train message has neither a seed nor an aggregate")
        weight = float(record[WEIGHT].numpy()[0])
        if not weight > 0:
            raise InvalidInputError(f"aggregate weight must be > 0, got {weight}")
        body = array_blob(record[SUM]) if encrypted else record[SUM].numpy()
        return cls(payload=body, weight=weight)


@dataclass(frozen=True)
class Update:
    """A client's reply to a train message."""

    tenant_id: str
    region: str
    sharing: str
    weight: float
    users: int
    epsilon: float
    dp_run_id: str
    update: bytes | np.ndarray
    global_update: bytes | None = None

    def to_content(self) -> RecordDict:
        """As a reply's content."""
        arrays = {
            UPDATE: blob_array(self.update)
            if isinstance(self.update, bytes)
            else Array(np.asarray(self.update, dtype=np.float32))
        }
        if self.global_update is not None:
            arrays[GLOBAL] = blob_array(self.global_update)
        return RecordDict(
            {
                ARRAYS: ArrayRecord(arrays),
                METRICS: MetricRecord(
                    {"weight": self.weight, "num-examples": self.users, "epsilon": self.epsilon}
                ),
                TAGS: ConfigRecord(
                    {
                        "tenant_id": self.tenant_id,
                        "region": self.region,
                        "sharing": self.sharing,
                        "dp_run_id": self.dp_run_id,
                    }
                ),
            }
        )

    @classmethod
    def from_content(cls, content: RecordDict, *, encrypted: bool) -> Update:
        """Read a reply's content; InvalidInputError names what is missing or malformed."""
        try:
            arrays = content.array_records[ARRAYS]
            metrics = content.metric_records[METRICS]
            tags = content.config_records[TAGS]
            update_array = arrays[UPDATE]
            weight = float(scalar(metrics["weight"], float))
            users = int(scalar(metrics["num-examples"], int))
            eps = float(scalar(metrics["epsilon"], float))
            tenant_id, region = str(tags["tenant_id"]), str(tags["region"])
            sharing, dp_run_id = str(tags["sharing"]), str(tags["dp_run_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"malformed train reply: {exc}") from None
        if not (weight > 0 and np.isfinite(weight)):
            raise InvalidInputError(f"reply from {tenant_id!r}: weight must be > 0, got {weight}")
        body: bytes | np.ndarray = (
            array_blob(update_array) if encrypted else update_array.numpy().astype(np.float32)
        )
        glob = array_blob(arrays[GLOBAL]) if GLOBAL in arrays else None
        return cls(tenant_id, region, sharing, weight, users, eps, dp_run_id, body, glob)


@dataclass(frozen=True)
class Status:
    """A client's answer to the roster query: who it is, and whether the round fits its budget."""

    tenant_id: str
    region: str
    sharing: str
    users: int
    round_cost: float
    spent: float
    cap: float

    @property
    def affordable(self) -> bool:
        """Whether the round fits under the tenant's cap."""
        return self.users > 0 and self.budget.fits(self.spent + self.round_cost)

    @property
    def budget(self) -> BudgetState:
        """The tenant's budget as the client reported it."""
        return BudgetState(self.cap, self.spent)

    def to_content(self) -> RecordDict:
        """As a query reply's content."""
        return RecordDict({STATUS: ConfigRecord(asdict(self))})

    @classmethod
    def from_content(cls, content: RecordDict) -> Status:
        """Read a query reply; InvalidInputError names what is missing or malformed."""
        try:
            record = content.config_records[STATUS]
            return cls(
                str(record["tenant_id"]),
                str(record["region"]),
                str(record["sharing"]),
                int(scalar(record["users"], int)),
                float(scalar(record["round_cost"], float)),
                float(scalar(record["spent"], float)),
                float(scalar(record["cap"], float)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"malformed status reply: {exc}") from None
