"""The Flower ClientApp: one per tenant, in the tenant's home region, trains with Opacus.

- `query`: answers the aggregator's roster question (tenant, region, policy, whether the
  round fits the budget); a solo or foreign tenant answers with an (audited) refusal.
- `train`: decrypts the round's starting backbone with the region's key (the tenants hold
  it; the aggregator does not), trains it with user-level DP on the tenant's own data
  (charging the tenant's ledger first), and returns `weight x backbone` encrypted under the
  region's key, plus a second copy under the global key for a `global` tenant.

Which tenant a node serves comes from its node config (`tenant-id`, deployment engine) or
from its `partition-id` among the region's tenants (simulation engine).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from atlasrec.errors import AtlasRecError, InvalidInputError
from atlasrec.federation.store import aggregate_vector, key_service, region_domain
from atlasrec.federation.wire import (
    ARRAYS,
    CONFIG,
    ENCRYPTED,
    Start,
    Update,
    scalar,
)
from atlasrec.models.backbone import initial_backbone, unflatten
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy, parse_region
from clients.local import RoundPlan, client_status, train_round
from privacy import he

WEIGHT_CAP = 1000
"""Users at which a tenant's aggregation weight saturates (weight = min(users, cap) / cap):
bounds any one tenant's influence and keeps every encrypted coordinate within CKKS range."""
REFUSED = 403


def actor(tenant_id: str) -> str:
    """Who acts, for the audit ledger."""
    return f"flower-client:{tenant_id}:{getpass.getuser()}@{socket.gethostname()}"


def _plan(message: Message, node_region: Region) -> RoundPlan:
    config = message.content.config_records[CONFIG]
    try:
        region = parse_region(str(config["region"]))
        if region != node_region:
            raise InvalidInputError(
                f"this node runs in region {node_region.value!r}, the aggregator is in "
                f"{region.value!r}"
            )
        return RoundPlan(
            run_id=str(config["run_id"]),
            round=int(scalar(config.get("round", 0), int)),
            region=region,
            round_epsilon=float(scalar(config["round_epsilon"], float)),
            local_epochs=int(scalar(config["local_epochs"], int)),
            seed=int(scalar(config["seed"], int)),
            backbone_in=str(config.get("backbone_in") or "") or None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"malformed round config: {exc}") from None


def _identity(platform: Platform, context: Context, message: Message) -> tuple[str, Region]:
    """The tenant this node serves and the region it runs in."""
    region_value = context.node_config.get("region") or context.run_config.get("region")
    if region_value is None:
        region = parse_region(str(message.content.config_records[CONFIG]["region"]))
    else:
        region = parse_region(str(region_value))
    tenant = context.node_config.get("tenant-id")
    if tenant is not None:
        return str(tenant), region
    partition = context.node_config.get("partition-id")
    if partition is None:
        raise InvalidInputError("node config names neither a tenant-id nor a partition-id")
    tenants = [t.id for t in platform.control.list_tenants(region)]
    index = int(scalar(partition, int))
    if not 0 <= index < len(tenants):
        raise InvalidInputError(
            f"partition {index} has no tenant: region {region.value!r} has {len(tenants)}"
        )
    return tenants[index], region


def make_client_app(platform_for: Callable[[], Platform]) -> ClientApp:
    """A ClientApp whose handlers reach the platform through `platform_for`."""
    app = ClientApp()

    def request(message: Message, context: Context) -> tuple[Platform, str, RoundPlan]:
        platform = platform_for()
        tenant_id, region = _identity(platform, context, message)
        return platform, tenant_id, _plan(message, region)

    @app.query()
    def query(message: Message, context: Context) -> Message:
        try:
            platform, tenant_id, plan = request(message, context)
            status = client_status(platform, tenant_id, plan, actor=actor(tenant_id))
        except AtlasRecError as exc:
            return Message(Error(REFUSED, str(exc)), reply_to=message)
        keys = key_service(platform.settings)
        keys.ensure(region_domain(plan.region))  # the tenants are the region key's holders
        if status.sharing == SharingPolicy.GLOBAL.value:
            keys.ensure("global")
        return Message(status.to_content(), reply_to=message)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        try:
            platform, tenant_id, plan = request(message, context)
            return Message(_train(platform, tenant_id, plan, message), reply_to=message)
        except AtlasRecError as exc:
            return Message(Error(REFUSED, str(exc)), reply_to=message)

    return app


def _train(platform: Platform, tenant_id: str, plan: RoundPlan, message: Message) -> RecordDict:
    keys = key_service(platform.settings)
    domain = region_domain(plan.region)
    encrypted = bool(message.content.config_records[CONFIG].get(ENCRYPTED, True))
    start = Start.from_record(message.content.array_records[ARRAYS], encrypted=encrypted)
    if start.seed is not None:
        weights = initial_backbone(start.seed)
    else:
        assert start.payload is not None
        secret = keys.secret_context(domain) if encrypted else None
        weights = unflatten(aggregate_vector(start.payload, start.weight, secret=secret))
    local = train_round(platform, tenant_id, weights, plan, actor=actor(tenant_id))
    weight = min(local.users, WEIGHT_CAP) / WEIGHT_CAP
    weighted = (local.vector.astype(np.float64) * weight).astype(np.float32)
    update: bytes | np.ndarray = weighted
    global_update = None
    if encrypted:
        update = he.encrypt(he.load_context(keys.public_context(domain)), weighted).to_bytes()
        if local.sharing == SharingPolicy.GLOBAL.value:
            global_ctx = he.load_context(keys.public_context("global"))
            global_update = he.encrypt(global_ctx, weighted).to_bytes()
    return Update(
        tenant_id,
        local.region,
        local.sharing,
        weight,
        local.users,
        local.epsilon,
        local.dp_run_id,
        update,
        global_update,
    ).to_content()


@lru_cache(maxsize=1)
def _shared_platform() -> Platform:
    return Platform()


app = make_client_app(_shared_platform)
"""The ClientApp `flwr run` and `flower-supernode` load (`[tool.flwr.app.components]`)."""
