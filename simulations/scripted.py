"""Scripted Flower clients for simulations of many tenants, with failure injection.

A scripted client answers the aggregator like a real one (roster query, encrypted weighted
update under the region's and, for a global tenant, the global key) but sends a synthetic
update instead of training, and does whatever the `Script` tells it: claim another region,
tag its update as another tenant, crash mid-round, stall past the timeout. It exercises the
aggregator's real strategy chain and encryption at any number of tenants without the cost
of training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from atlasrec.federation.store import key_service, region_domain
from atlasrec.federation.wire import Status, Update
from atlasrec.models.backbone import backbone_size
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from privacy import he
from privacy.keys import KeyService
from server.embedded import node_id
from server.federation import FederationConfig, FederationResult, run_federation
from server.local_grid import LocalGrid


@dataclass
class Script:
    """What each scripted client claims and sends."""

    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per tenant: overrides of the roster answer (e.g. a false region)."""
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per tenant: overrides of the update's tags."""
    crash: set[str] = field(default_factory=set)
    stall: dict[str, float] = field(default_factory=dict)
    """Per tenant: seconds to sleep before answering the train message."""
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    trained: list[str] = field(default_factory=list)


def _encrypted(keys: KeyService, domain: str, vector: np.ndarray) -> bytes:
    return he.encrypt(he.load_context(keys.public_context(domain)), vector).to_bytes()


def scripted_app(
    platform: Platform, region: Region, script: Script, *, encrypt: bool = True
) -> ClientApp:
    """A ClientApp whose nodes (node config `tenant-id`) follow `script`."""
    app = ClientApp()
    keys = key_service(platform.settings)

    @app.query()
    def query(message: Message, context: Context) -> Message:
        tenant = platform.control.get_tenant(str(context.node_config["tenant-id"]))
        keys.ensure(region_domain(region))
        keys.ensure("global")
        status: dict[str, Any] = {
            "tenant_id": tenant.id,
            "region": region.value,
            "sharing": str(tenant.sharing),
            "users": 10,
            "round_cost": 1.0,
            "spent": 0.0,
            "cap": tenant.epsilon_cap,
            **script.claims.get(tenant.id, {}),
        }
        return Message(Status(**status).to_content(), reply_to=message)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        tenant_id = str(context.node_config["tenant-id"])
        script.trained.append(tenant_id)
        if tenant_id in script.crash:
            raise RuntimeError(f"{tenant_id} crashed mid-round")
        time.sleep(script.stall.get(tenant_id, 0.0))
        tenant = platform.control.get_tenant(tenant_id)
        rng = np.random.default_rng(node_id(tenant_id))
        vector = script.vectors.setdefault(
            tenant_id, rng.normal(0, 0.1, backbone_size()).astype(np.float32)
        )
        weight = script.weights.setdefault(tenant_id, 0.01 * (1 + len(tenant_id)))
        weighted = (vector.astype(np.float64) * weight).astype(np.float32)
        tags = {
            "tenant_id": tenant_id,
            "region": region.value,
            "sharing": str(tenant.sharing),
            **script.tags.get(tenant_id, {}),
        }
        update = Update(
            tags["tenant_id"],
            tags["region"],
            tags["sharing"],
            weight,
            10,
            1.0,
            f"run-{tenant_id}",
            _encrypted(keys, region_domain(region), weighted) if encrypt else weighted,
            _encrypted(keys, "global", weighted)
            if encrypt and tenant.sharing == SharingPolicy.GLOBAL
            else None,
        )
        return Message(update.to_content(), reply_to=message)

    return app


def run_scripted(
    platform: Platform,
    region: Region,
    script: Script,
    *,
    rounds: int = 1,
    min_participants: int = 1,
    timeout: float = 120.0,
    encrypt: bool = True,
) -> FederationResult:
    """Run the region's real aggregator against scripted nodes, one per tenant of the region."""
    tenants = platform.control.list_tenants(region)
    nodes: dict[int, dict[str, bool | float | int | str]] = {
        node_id(t.id): {"tenant-id": t.id} for t in tenants
    }
    app = scripted_app(platform, region, script, encrypt=encrypt)
    grid = LocalGrid(app, nodes, workers=len(nodes))
    config = FederationConfig(
        rounds=rounds, min_participants=min_participants, timeout_s=timeout, encrypt=encrypt
    )
    return run_federation(platform, region, grid, config, actor="simulation")
