"""A region's aggregator: builds the strategy, runs (or resumes) rounds, records each one.

The strategy is Flower's `FedAvg` for sampling and messaging, wrapped (outermost first) by
`RoundAudit` -> `BudgetGate` -> `ResidencyGuard` -> `SecureAggregation`. Each completed
round publishes an encrypted backbone version in the region's store, appends a
`federation.round` record to the region's ledger and advances the run's row, so a restarted
aggregator resumes after the last completed round. The aggregator is only ever given public
key material.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from sqlmodel import Session, col, select

from atlasrec.clock import utcnow
from atlasrec.dataplane.tables import FederationRun
from atlasrec.errors import InvalidInputError
from atlasrec.federation.store import (
    BackboneVersion,
    key_service,
    region_domain,
    region_store,
)
from atlasrec.federation.wire import Start
from atlasrec.models.backbone import backbone_size
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from server import global_tier
from strategies.budget_gate import BudgetGate
from strategies.residency import Registry, ResidencyGuard
from strategies.round_audit import PublishRound, RoundAudit
from strategies.round_state import RoundState
from strategies.secure import SecureAggregation

ROUND = "federation.round"


@dataclass(frozen=True)
class FederationConfig:
    """How a region's federation runs."""

    rounds: int = 2
    round_epsilon: float = 1.0
    """Epsilon each participant is charged per round (user-level, its own ledger)."""
    local_epochs: int = 2
    min_participants: int = 2
    encrypt: bool = True
    timeout_s: float = 1800.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise InvalidInputError(f"--rounds must be at least 1, got {self.rounds}")
        if not self.round_epsilon > 0:
            raise InvalidInputError("round epsilon must be > 0")
        if self.local_epochs < 1 or self.min_participants < 1:
            raise InvalidInputError("local epochs and minimum participants must be >= 1")


@dataclass(frozen=True)
class FederationResult:
    """What a `federate` run did."""

    run_id: str
    region: str
    resumed: bool
    rounds_planned: int
    rounds_done: int
    backbone_version: str | None
    rounds: list[dict[str, Any]]


def _registry(platform: Platform) -> Registry:
    def lookup(tenant_id: str) -> tuple[Region | None, SharingPolicy | None]:
        home = platform.control.home_region_of(tenant_id)
        return (
            (home, SharingPolicy(platform.control.get_tenant(tenant_id).sharing))
            if home
            else (None, None)
        )

    return lookup


class _RoundPublisher:
    """Publishes each round's aggregate and writes its record (the `RoundAudit` callback)."""

    def __init__(
        self, platform: Platform, run: FederationRun, config: FederationConfig, actor: str
    ):
        self.platform, self.run, self.config, self.actor = platform, run, config, actor
        self.region = Region(run.region)
        self.started = time.perf_counter()

    def __call__(self, round_: int, arrays: ArrayRecord | None, state: RoundState) -> str | None:
        backbone_in = self.run.backbone_out or self.run.backbone_in
        entry: dict[str, Any] = {
            "round": round_,
            "backbone_in": backbone_in,
            "participants": {c.tenant_id: asdict(c) for c in state.contributions},
            "refused": dict(state.refused),
            "dropped": dict(state.dropped),
            "failed": dict(state.failed),
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        version: BackboneVersion | None = None
        if arrays is not None and state.aggregated:
            start = Start.from_record(arrays, encrypted=self.config.encrypt)
            payload = (
                start.payload
                if isinstance(start.payload, bytes)
                else np.asarray(start.payload, dtype=np.float32).tobytes()
            )
            # LATEST moves only once the round is recorded: a crash before that leaves an
            # unreferenced version, and the resumed run redoes the round from the last one.
            version = region_store(self.platform.settings, self.region).publish(
                payload,
                point_latest=False,
                metadata={
                    "region": self.region.value,
                    "federation_run": self.run.id,
                    "round": round_,
                    "encrypted": self.config.encrypt,
                    "weight": start.weight,
                    "parent": backbone_in,
                    "contributors": {c.tenant_id: c.epsilon for c in state.contributions},
                },
            )
            if state.global_sum is not None:
                share = global_tier.export_share(
                    self.platform,
                    self.region,
                    run_id=self.run.id,
                    round_=round_,
                    payload=state.global_sum,
                    weight=state.global_weight,
                    contributors=state.global_contributions,
                    actor=self.actor,
                )
                entry["global_share"] = share.version
        entry["backbone_out"] = version.version if version else backbone_in
        entry["status"] = "completed" if version else "failed"
        plane = self.platform.plane(self.region)
        with Session(plane.engine, expire_on_commit=False) as session, session.begin():
            row = session.get(FederationRun, self.run.id)
            assert row is not None
            row.rounds_done = round_
            row.rounds = [*row.rounds, entry]
            row.backbone_out = entry["backbone_out"]
            row.updated_at = utcnow()
            plane.ledger.append(
                actor=self.actor,
                action=ROUND,
                subject=f"federation:{self.run.id}/{round_}",
                details={
                    "region": self.region.value,
                    **{k: v for k, v in entry.items() if k != "participants"},
                    "participants": sorted(entry["participants"]),
                    "epsilon": {c.tenant_id: c.epsilon for c in state.contributions},
                },
                session=session,
            )
        if version is not None:
            region_store(self.platform.settings, self.region).point_latest(version.version)
        self.run = row
        self.started = time.perf_counter()
        return version.version if version else None


def _open_run(
    platform: Platform, region: Region, config: FederationConfig
) -> tuple[FederationRun, bool]:
    """The region's unfinished run (resumed), or a new one."""
    plane = platform.plane(region)
    with Session(plane.engine, expire_on_commit=False) as session, session.begin():
        unfinished = (
            session.execute(
                select(FederationRun)
                .where(col(FederationRun.region) == region.value)
                .where(col(FederationRun.status) == "running")
                .order_by(col(FederationRun.started_at).desc())
            )
            .scalars()
            .first()
        )
        if unfinished is not None:
            return unfinished, True
        latest = region_store(platform.settings, region).latest()
        run = FederationRun(
            id=uuid.uuid4().hex,
            region=region.value,
            status="running",
            rounds_planned=config.rounds,
            config=asdict(config),
            backbone_in=latest.version if latest else None,
            rounds=[],
        )
        session.add(run)
    return run, False


def _initial(
    platform: Platform, region: Region, version: str | None, config: FederationConfig
) -> Start:
    if version is None:
        return Start(seed=config.seed)
    stored = region_store(platform.settings, region).get(version)
    if stored.encrypted != config.encrypt:
        raise InvalidInputError(
            f"region {region.value!r}'s backbone {version} is "
            f"{'encrypted' if stored.encrypted else 'plaintext'}: run with the same setting"
        )
    payload = stored.payload()
    if stored.encrypted:
        return Start(payload=payload, weight=stored.weight)
    return Start(payload=np.frombuffer(payload, dtype=np.float32), weight=stored.weight)


def build_strategy(
    platform: Platform,
    region: Region,
    config: FederationConfig,
    *,
    state: RoundState,
    publish_round: PublishRound,
    round_offset: int,
    backbone_in: str | None,
    actor: str,
) -> RoundAudit:
    """The region's strategy: FedAvg wrapped by the guards, secure aggregation and audit."""
    keys = key_service(platform.settings)
    domain = region_domain(region)
    ledger = platform.plane(region).ledger

    def audit(tenant_id: str | None, action: str, details: dict[str, Any]) -> None:
        ledger.append(
            actor=actor,
            action=action,
            subject=f"federation:{region.value}",
            tenant_id=tenant_id,
            details={"region": region.value, **details},
        )

    base = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=1,
        min_available_nodes=config.min_participants,
    )
    secure = SecureAggregation(
        base,
        state=state,
        min_participants=config.min_participants,
        length=backbone_size(),
        region_context=(lambda: keys.public_context(domain)) if config.encrypt else None,
        global_context=(lambda: keys.public_context("global")) if config.encrypt else None,
    )
    guard = ResidencyGuard(
        secure, region=region, registry=_registry(platform), state=state, audit=audit
    )
    gate = BudgetGate(guard, state=state, audit=audit)
    return RoundAudit(
        gate, state=state, record=publish_round, round_offset=round_offset, backbone_in=backbone_in
    )


def run_federation(
    platform: Platform, region: Region, grid: Grid, config: FederationConfig, *, actor: str
) -> FederationResult:
    """Run the region's federation to the end of its planned rounds (resuming if unfinished)."""
    run, resumed = _open_run(platform, region, config)
    if resumed:
        config = FederationConfig(**run.config)
    remaining = run.rounds_planned - run.rounds_done
    start_version = run.backbone_out or run.backbone_in
    publish_round = _RoundPublisher(platform, run, config, actor)
    state = RoundState()
    strategy = build_strategy(
        platform,
        region,
        config,
        state=state,
        publish_round=publish_round,
        round_offset=run.rounds_done,
        backbone_in=start_version,
        actor=actor,
    )
    train_config = ConfigRecord(
        {
            "run_id": run.id,
            "region": region.value,
            "round_epsilon": config.round_epsilon,
            "local_epochs": config.local_epochs,
            "seed": config.seed,
        }
    )
    if remaining > 0:
        strategy.start(
            grid=grid,
            initial_arrays=_initial(platform, region, start_version, config).to_record(),
            num_rounds=remaining,
            timeout=config.timeout_s,
            train_config=train_config,
        )
    plane = platform.plane(region)
    with Session(plane.engine, expire_on_commit=False) as session, session.begin():
        row = session.get(FederationRun, run.id)
        assert row is not None
        row.status, row.updated_at = "completed", utcnow()
    return FederationResult(
        row.id,
        region.value,
        resumed,
        row.rounds_planned,
        row.rounds_done,
        row.backbone_out,
        row.rounds,
    )
