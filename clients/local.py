"""What a tenant's federated client does, without Flower: join checks, DP charge, local training.

Everything here runs in the tenant's home region, through the tenant's scope. The update it
returns holds only the ID-free backbone (`atlasrec.models.backbone`); the tenant's item-id
residuals are not even trained. Each round is charged to the tenant's privacy ledger before
its first step, for exactly the update that leaves the client.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from atlasrec.boundary import federation_refusal
from atlasrec.dataplane.dp_runs import DpRunTable, budget_transactions
from atlasrec.dataplane.training_data import load_tenant_dataset
from atlasrec.errors import AtlasRecError, InvalidInputError
from atlasrec.federation.wire import Status
from atlasrec.models.backbone import BACKBONE_CONFIG, flatten
from atlasrec.models.pretrain import pretrain_backbone
from atlasrec.models.recommender import user_sequences
from atlasrec.models.training import DpPlan, dp_schedule, train
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.offline_store import TenantOffline
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope, SharingPolicy
from privacy.accounting import Mechanism, calibrate_noise
from privacy.budget import BudgetExceededError, Charge, charged_run

JOIN = "federation.join"


class FederationRefusedError(AtlasRecError):
    """A tenant may not take part in this federation (its policy or its region forbids it)."""


@dataclass(frozen=True)
class RoundPlan:
    """What the aggregator asks of every client in one round."""

    run_id: str
    round: int
    region: Region
    round_epsilon: float
    local_epochs: int
    seed: int
    backbone_in: str | None

    def config(self) -> TwoTowerConfig:
        """The local training configuration of this round."""
        return replace(BACKBONE_CONFIG, epochs=self.local_epochs, seed=self.seed)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for messages and lineage)."""
        return {
            "run_id": self.run_id,
            "round": self.round,
            "region": self.region.value,
            "round_epsilon": self.round_epsilon,
            "local_epochs": self.local_epochs,
            "seed": self.seed,
            "backbone_in": self.backbone_in or "",
        }


@dataclass(frozen=True)
class LocalUpdate:
    """A client's trained backbone (flat vector) and what producing it cost."""

    tenant_id: str
    region: str
    sharing: str
    vector: np.ndarray
    users: int
    epsilon: float
    dp_run_id: str


def join_scope(platform: Platform, tenant_id: str, region: Region, *, actor: str) -> Scope:
    """The tenant's scope for federation in `region`, or an audited refusal.

    A `solo` tenant never joins, whatever its client was told; a tenant only joins in its
    home region (the boundary refuses any other).
    """
    tenant = platform.control.get_tenant(tenant_id)
    scope = Scope(tenant_id, region)
    plane = platform.plane(region)
    plane.boundary.admit(scope, actor=actor, action=JOIN, subject=f"federation:{region.value}")
    reason = federation_refusal(
        tenant_id, Region(tenant.home_region), SharingPolicy(tenant.sharing), region
    )
    if reason is not None:
        plane.boundary.refuse(
            scope,
            FederationRefusedError(reason),
            actor=actor,
            action=JOIN,
            subject=f"federation:{region.value}",
        )
    return scope


def _mechanism(users: int, plan: RoundPlan, delta: float) -> tuple[Mechanism, float]:
    """The round's DP-SGD mechanism for `users` users, calibrated to `plan.round_epsilon`."""
    rate, steps = dp_schedule(users, plan.config())
    sigma = calibrate_noise(plan.round_epsilon, delta, rate, steps)
    return Mechanism(sigma, rate, steps), plan.config().max_grad_norm


def _seed(plan: RoundPlan, tenant_id: str) -> int:
    digest = hashlib.sha256(f"{plan.run_id}:{plan.round}:{tenant_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def client_status(platform: Platform, tenant_id: str, plan: RoundPlan, *, actor: str) -> Status:
    """Identity and budget of a client for the coming round (charges nothing)."""
    scope = join_scope(platform, tenant_id, plan.region, actor=actor)
    tenant = platform.control.get_tenant(tenant_id)
    plane = platform.plane(plan.region)
    with plane.session(scope, actor=actor, action="federation.status") as session:
        users = _user_count(plane.offline.scoped(scope, actor=actor))
        budget = DpRunTable(session, plane.ledger).budget(
            cap=tenant.epsilon_cap, delta=tenant.delta
        )
        if users == 0:  # nothing to train on: never affordable
            spent, after = budget.state().spent, float("inf")
        else:
            spent, after = budget.preview(_mechanism(users, plan, tenant.delta)[0])
    return Status(
        tenant_id,
        plan.region.value,
        SharingPolicy(tenant.sharing).value,
        users,
        after - spent,
        spent,
        tenant.epsilon_cap,
    )


def _user_count(offline: TenantOffline) -> int:
    """Distinct users in the tenant's offline store (ingested files and events)."""
    users = offline.read_table(["user_key"])["user_key"]
    return int(pc.count_distinct(pc.cast(users, pa.string())).as_py())


def train_round(
    platform: Platform,
    tenant_id: str,
    start: dict[str, torch.Tensor],
    plan: RoundPlan,
    *,
    actor: str,
) -> LocalUpdate:
    """Charge this round to the tenant's ledger, then train the backbone with user-level DP."""
    scope = join_scope(platform, tenant_id, plan.region, actor=actor)
    tenant = platform.control.get_tenant(tenant_id)
    plane = platform.plane(plan.region)
    data = load_tenant_dataset(plane, scope, actor=actor)
    sequences = user_sequences(data.interactions)
    users = sum(1 for s in sequences if len(s))
    if users == 0:
        raise InvalidInputError(f"tenant {tenant_id!r} has no interactions to train on")
    mechanism, clip = _mechanism(users, plan, tenant.delta)
    charge = Charge(
        mechanism,
        "federation",
        {
            "federation_run": plan.run_id,
            "round": plan.round,
            "region": plan.region.value,
            "backbone_in": plan.backbone_in,
            "users": users,
            "data_snapshot": data.snapshot,
        },
    )
    dp = DpPlan(
        mechanism.noise_multiplier,
        mechanism.sample_rate,
        mechanism.steps,
        clip,
        tenant.delta,
        platform.settings.dp_secure_mode,
    )
    config = replace(plan.config(), seed=_seed(plan, tenant_id))
    with charged_run(
        budget_transactions(plane, scope, actor=actor),
        purpose="federation",
        cap=tenant.epsilon_cap,
        delta=tenant.delta,
        plan=lambda _state: [charge],
    ) as charged:
        if plan.backbone_in is None:  # a new federation: first fit the shared start to the
            # catalog's content (no user data, nothing to charge), as solo training does
            start = pretrain_backbone(data.content, replace(config, seed=plan.seed), start)
        model, _ = train(data.content, sequences, config, dp=dp, init_backbone=start)
    run = charged.runs[0]
    return LocalUpdate(
        tenant_id,
        plan.region.value,
        SharingPolicy(tenant.sharing).value,
        flatten(model.backbone.state_dict()),
        users,
        run.epsilon,
        run.id,
    )


__all__ = [
    "BudgetExceededError",
    "FederationRefusedError",
    "LocalUpdate",
    "RoundPlan",
    "client_status",
    "join_scope",
    "train_round",
]
