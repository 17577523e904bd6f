"""`atlasrec train`: training of a tenant's model, entirely inside its home region.

A `regional` or `global` tenant starts from the latest federated backbone it may use
(`parent_backbone`): its home region's, or, for a `global` tenant whose region has published
none yet, the cross-region tier's. A `solo` tenant never does. The backbone is decrypted
with the domain's key before anything is charged; the run's own DP guarantee is unchanged
(the backbone is already a DP aggregate, charged to its contributors by the federation).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

import atlasrec
from atlasrec.control.service import MAX_EPSILON_CAP
from atlasrec.control.tables import Tenant
from atlasrec.dataplane.dp_runs import budget_transactions
from atlasrec.dataplane.training_data import TenantDataset, load_tenant_dataset, plant_canaries
from atlasrec.errors import AtlasRecError, InvalidInputError
from atlasrec.federation.store import (
    BackboneVersion,
    global_store,
    open_backbone,
    region_store,
)
from atlasrec.intents import DefaultOrder
from atlasrec.models.backbone import BACKBONE_CONFIG
from atlasrec.models.bundle import KIND, write_bundle
from atlasrec.models.dp_ease import DpEaseConfig
from atlasrec.models.dp_run import RunMechanisms, fit_dp_run, run_mechanisms
from atlasrec.models.dp_validation import K as VALIDATION_K
from atlasrec.models.ease_profile import ProfileWeights
from atlasrec.models.popularity import (
    CONTRIBUTION_CAP,
    weighted_counts,
)
from atlasrec.models.ranking.features import category_codes
from atlasrec.models.ranking.fit import train_with_ranker
from atlasrec.models.ranking.ranker import LinearRanker, model_ranker
from atlasrec.models.recommender import user_sequences
from atlasrec.models.training import DpPlan, Progress, TrainReport, dp_schedule
from atlasrec.models.two_tower import TwoTower, TwoTowerConfig
from atlasrec.platform import Platform
from atlasrec.releases import register
from atlasrec.tenancy import Region, Scope, SharingPolicy
from privacy.accounting import Mechanism
from privacy.accounting import epsilon as epsilon_of
from privacy.budget import (
    BudgetExceededError,
    BudgetState,
    Charge,
    ChargedRun,
    ChargedRuns,
    charged_run,
)
from privacy.canaries import CANARY_ITEMS, CANARY_USERS, canaries

DEFAULT_EPSILON = 4.0
MIN_EPSILON = 0.05
"""The smallest epsilon a DP run is given: below it the noise drowns the model."""
DP_RANKER_REASON = "DP run: not fitted on user data"


@dataclass(frozen=True)
class TrainResult:
    """What `train` produced."""

    tenant_id: str
    region: str
    model_version: str
    lineage: dict[str, Any]
    release: str = "live"
    """Its state in the release registry (`atlasrec.releases`): `live` or `candidate`."""


def code_version() -> str:
    """The package version, and the git commit when running from a checkout."""
    git = shutil.which("git")
    if git is None:
        return atlasrec.__version__
    try:
        commit = subprocess.run(  # noqa: S603 - fixed arguments, no user input
            [git, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return f"{atlasrec.__version__}+{commit}" if commit else atlasrec.__version__


def dp_config(config: TwoTowerConfig) -> TwoTowerConfig:
    """DP runs train the compact ID-free towers only, from content-only pretraining."""
    return replace(
        config,
        residuals=BACKBONE_CONFIG.residuals,
        hidden=BACKBONE_CONFIG.hidden,
        batch_size=BACKBONE_CONFIG.batch_size,
        pretrain_steps=BACKBONE_CONFIG.pretrain_steps,
    )


def backbone_config(config: TwoTowerConfig) -> TwoTowerConfig:
    """`config` with the shared backbone's layer sizes, so a published backbone loads into it."""
    return replace(config, hidden=BACKBONE_CONFIG.hidden, dim=BACKBONE_CONFIG.dim)


@dataclass(frozen=True)
class ParentBackbone:
    """The federated backbone a training run starts from, decrypted."""

    version: BackboneVersion
    state: dict[str, torch.Tensor]

    def lineage(self) -> dict[str, Any]:
        """What the model's lineage records about it."""
        meta = self.version.metadata
        entry: dict[str, Any] = {
            "version": self.version.version,
            "domain": self.version.domain,
            "region": meta.get("region") or self.version.domain,  # "global": the cross-region tier
            "federation_run": meta.get("federation_run"),
            "round": meta.get("round"),
            "contributors": dict(meta.get("contributors", {})),
        }
        if "shares" in meta:  # the cross-region tier: which regional share of each region
            entry["shares"] = dict(meta["shares"])
        return entry


def latest_backbone(platform: Platform, tenant: Tenant) -> BackboneVersion | None:
    """The backbone version a tenant's training starts from, or None.

    `solo`: never one. `regional`: its home region's latest. `global`: its home region's
    latest too (fresher, published every round, and it holds the regional tenants' updates
    as well), else the cross-region tier's latest.
    """
    sharing = SharingPolicy(tenant.sharing)
    if sharing is SharingPolicy.SOLO:
        return None
    latest = region_store(platform.settings, Region(tenant.home_region)).latest()
    if latest is None and sharing is SharingPolicy.GLOBAL:
        latest = global_store(platform.settings).latest()
    return latest


def load_parent_backbone(platform: Platform, tenant: Tenant) -> ParentBackbone | None:
    """Find and decrypt the tenant's starting backbone; a damaged one raises InvalidInputError."""
    version = latest_backbone(platform, tenant)
    if version is None:
        return None
    try:
        state = open_backbone(platform.settings, version)
    except (AtlasRecError, KeyError, ValueError) as exc:
        raise InvalidInputError(
            f"tenant {tenant.id!r}: cannot open backbone {version.domain}/{version.version} "
            f"({exc}); train with --no-backbone to start without it"
        ) from None
    return ParentBackbone(version, state)


@dataclass(frozen=True)
class TrainingInputs:
    """What a training run starts from: the tenant, its data and the model's configuration."""

    tenant: Tenant
    scope: Scope
    data: TenantDataset
    sequences: list[np.ndarray]
    users: int
    config: TwoTowerConfig
    parent: ParentBackbone | None

    @property
    def init(self) -> dict[str, torch.Tensor] | None:
        """The backbone weights the model starts from."""
        return None if self.parent is None else self.parent.state


@dataclass(frozen=True)
class FittedModel:
    """A trained model with what its bundle ships beside it, and its lineage entries."""

    model: TwoTower
    report: TrainReport
    counts: np.ndarray
    ranker: LinearRanker
    ranker_lineage: dict[str, Any]
    neighbours: sp.csr_matrix | None = None
    dp: dict[str, Any] | None = None
    profile: ProfileWeights | None = None
    order: DefaultOrder = field(default_factory=DefaultOrder)
    order_lineage: dict[str, Any] = field(default_factory=dict)


def train_tenant(
    platform: Platform,
    tenant_id: str,
    *,
    actor: str,
    epsilon: float | None = None,
    no_dp: bool = False,
    no_backbone: bool = False,
    config: TwoTowerConfig | None = None,
    progress: Progress | None = None,
    promote: bool = False,
) -> TrainResult:
    """Train, charge the DP budget before the first step, publish atomically, audit.

    The model is published as a release candidate (`atlasrec.releases`); the tenant's first
    model, or one trained with `promote`, goes live at once.

    A DP run of a `regional` or `global` tenant starts from its latest federated backbone
    (`latest_backbone`) unless `no_backbone`; the model then takes the backbone's layer
    sizes (`backbone_config`). A `--no-dp` run never does: measured on the demo's small
    tenants, the backbone never raised no-DP NDCG@10 and lowered it to 0.65-0.87x solo once
    the federation started from content pretraining (`docs/benchmarks.md`, cold start).
    Without DP the tenant's ranker is fitted too (`atlasrec.models.ranking`) and published
    when it beats the retrieval order in cross-validation. A DP run releases the item
    counts with DP first (`kind` "popularity", composed with its DP-SGD steps to the run's
    epsilon) for the popularity prior, and publishes the model's own scoring as its ranker:
    a ranker fitted on user data would fall outside the run's guarantee.
    """
    if no_dp and epsilon is not None:
        raise InvalidInputError("give either --epsilon or --no-dp, not both")
    if epsilon is not None and not MIN_EPSILON <= epsilon <= MAX_EPSILON_CAP:
        raise InvalidInputError(
            f"tenant {tenant_id!r}: --epsilon must be a number from {MIN_EPSILON:g} "
            f"(less trains nothing useful) to {MAX_EPSILON_CAP:g}"
        )
    inputs = training_inputs(
        platform, tenant_id, actor=actor, no_dp=no_dp, no_backbone=no_backbone, config=config
    )
    if no_dp:
        fitted = fit_exact(inputs, progress)
        return publish(platform, inputs, fitted, actor=actor, dp_run_id=None, promote=promote)
    plane = platform.plane(inputs.scope.region)
    with charged_run(
        budget_transactions(plane, inputs.scope, actor=actor),
        purpose="train",
        cap=inputs.tenant.epsilon_cap,
        delta=inputs.tenant.delta,
        plan=lambda state: dp_charges(inputs, state, epsilon),
    ) as charged:
        fitted = fit_private(inputs, charged, platform.settings.dp_secure_mode, progress)
        train_run = charged.of_kind("train")
        result = publish(
            platform,
            inputs,
            fitted,
            actor=actor,
            dp_run_id=None if train_run is None else train_run.id,
            promote=promote,
        )
        charged.model_version = result.model_version
    return result


def training_inputs(
    platform: Platform,
    tenant_id: str,
    *,
    actor: str,
    no_dp: bool,
    no_backbone: bool,
    config: TwoTowerConfig | None,
) -> TrainingInputs:
    """The tenant, its data and configuration; the parent backbone is opened first (fails early)."""
    tenant = platform.control.get_tenant(tenant_id)
    scope = platform.scope(tenant_id)
    base = config or TwoTowerConfig()
    config = base if no_dp else dp_config(base)
    parent = None if no_backbone or no_dp else load_parent_backbone(platform, tenant)
    if parent is not None:
        config = backbone_config(config)
    data = load_tenant_dataset(platform.plane(scope.region), scope, actor=actor)
    if data.n_interactions == 0:
        raise InvalidInputError(f"tenant {tenant_id!r} has no interactions to train on")
    data = plant_canaries(data, canaries(platform.secret, tenant_id))
    sequences = user_sequences(data.interactions)
    users = sum(1 for s in sequences if len(s))
    return TrainingInputs(tenant, scope, data, sequences, users, config, parent)


def dp_charges(inputs: TrainingInputs, state: BudgetState, requested: float | None) -> list[Charge]:
    """A DP run's charges: count, Gram and validation releases, then the DP-SGD steps.

    The mechanisms (`atlasrec.models.dp_run.run_mechanisms`) are composed to the run's
    epsilon, and charged together or not at all.
    """
    run_epsilon = requested if requested is not None else min(DEFAULT_EPSILON, state.remaining)
    if run_epsilon < MIN_EPSILON:
        raise BudgetExceededError(
            f"tenant {inputs.tenant.id!r}: DP budget exhausted ({state.remaining:.3f} of "
            f"{state.cap:g} left); raise the cap or train with --no-dp"
        )
    rate, steps = dp_schedule(inputs.users, inputs.config)
    mechanisms = run_mechanisms(run_epsilon, inputs.tenant.delta, rate, steps, inputs.users)
    details: dict[str, Any] = {"requested_epsilon": run_epsilon, "users": inputs.users}
    charges = []
    if mechanisms.counts is not None:
        counted = Charge(
            mechanisms.counts, "popularity", {**details, "contribution_cap": CONTRIBUTION_CAP}
        )
        details["popularity_run"] = counted.id
        charges.append(counted)
    if mechanisms.gram is not None:
        config = DpEaseConfig()
        released = Charge(
            mechanisms.gram, "ease", {**details, "head": config.head, "cap": config.cap}
        )
        details["ease_run"] = released.id
        charges.append(released)
    if mechanisms.validation is not None:
        validated = Charge(mechanisms.validation, "validation", {**details, "k": VALIDATION_K})
        details["validation_run"] = validated.id
        charges.append(validated)
    return [*charges, Charge(mechanisms.sgd, "train", details)]


def fit_exact(inputs: TrainingInputs, progress: Progress | None) -> FittedModel:
    """A model without DP, with its fitted ranker and exact co-occurrence neighbours."""
    data = inputs.data
    fitted = train_with_ranker(
        data.content,
        category_codes(data.categories),
        data.interactions,
        inputs.config,
        init_backbone=inputs.init,
        progress=progress,
    )
    counts = weighted_counts(data.interactions)
    ranker_lineage = dict(fitted.lineage)
    order_lineage = ranker_lineage.pop("default_order")
    return FittedModel(
        fitted.model,
        fitted.report,
        counts,
        fitted.ranker,
        ranker_lineage,
        fitted.neighbours,
        profile=fitted.profile,
        order=fitted.order,
        order_lineage=order_lineage,
    )


def fit_private(
    inputs: TrainingInputs, charged: ChargedRuns, secure_mode: bool, progress: Progress | None
) -> FittedModel:
    """A DP model: the charged mechanisms, run in order (`atlasrec.models.dp_run`).

    A DP model keeps the DP release of the counts (zeros without one), never exact ones. With
    a Gram release it ships DP-EASE over the head (`atlasrec.models.dp_ease`). With a
    validation release its default order is the one that release chose, popularity at the
    floor (`atlasrec.models.dp_validation`); without one, DP-EASE's profile order.
    """
    sgd, release = charged.of_kind("train"), charged.of_kind("popularity")
    gram, validation = charged.of_kind("ease"), charged.of_kind("validation")
    assert sgd is not None
    m = sgd.charge.mechanism
    plan = DpPlan(
        m.noise_multiplier,
        m.sample_rate,
        m.steps,
        inputs.config.max_grad_norm,
        inputs.tenant.delta,
        secure_mode,
    )
    mechanisms = RunMechanisms(
        None if release is None else release.charge.mechanism,
        None if gram is None else gram.charge.mechanism,
        None if validation is None else validation.charge.mechanism,
        m,
    )
    data = inputs.data
    fit = fit_dp_run(
        data.content,
        category_codes(data.categories),
        data.interactions,
        inputs.config,
        mechanisms,
        plan,
        init_backbone=inputs.init,
        progress=progress,
    )
    ranker_lineage = {"fitted": False, "reason": DP_RANKER_REASON}
    dp = dp_lineage(plan, release, sgd.id, fit.report.epsilon_spent, gram, validation)
    return FittedModel(
        fit.model,
        fit.report,
        fit.counts,
        model_ranker(fit.model),
        ranker_lineage,
        dp=dp,
        profile=fit.profile,
        order=fit.order,
        order_lineage=fit.order_lineage,
    )


def publish(
    platform: Platform,
    inputs: TrainingInputs,
    fitted: FittedModel,
    *,
    actor: str,
    dp_run_id: str | None,
    promote: bool = False,
) -> TrainResult:
    """Publish the model bundle atomically with its lineage, audit it, register its release."""
    data, scope = inputs.data, inputs.scope
    plane = platform.plane(scope.region)
    lineage = {
        "data_snapshot": data.snapshot,
        "code_version": code_version(),
        "hyperparameters": inputs.config.as_dict(),
        "dp": fitted.dp,
        "parent_backbone": None if inputs.parent is None else inputs.parent.lineage(),
        "items": len(data.item_ids),
        "users": inputs.users,
        "interactions": data.n_interactions,
        "canaries": {"users": CANARY_USERS, "items": CANARY_ITEMS},
        "data_until": int(data.interactions.ts.max()),
        "train_seconds": round(fitted.report.seconds, 2),
        "final_loss": fitted.report.losses[-1] if fitted.report.losses else None,
        "ranker": fitted.ranker_lineage,
        "default_order": fitted.order_lineage,
    }
    artifact = plane.artifacts.publish(
        scope,
        KIND,
        lambda folder: write_bundle(
            folder,
            fitted.model,
            data.item_ids,
            fitted.counts,
            fitted.ranker,
            fitted.neighbours,
            fitted.profile,
            fitted.order,
        ),
        actor=actor,
        metadata=lineage,
        point_latest=False,  # the registry moves LATEST when the version goes live
    )
    parent = inputs.parent
    plane.ledger.append(
        actor=actor,
        action="model.trained",
        subject=f"model:{KIND}/{artifact.version}",
        tenant_id=scope.tenant_id,
        details={
            "data_snapshot": data.snapshot,
            "dp_run_id": dp_run_id,
            "code_version": lineage["code_version"],
            "parent_backbone": None
            if parent is None
            else f"{parent.version.domain}/{parent.version.version}",
        },
    )
    state = register(plane, scope, artifact.version, live=promote, actor=actor)
    return TrainResult(scope.tenant_id, scope.region.value, artifact.version, lineage, state.value)


def dp_lineage(
    plan: DpPlan,
    release_run: ChargedRun | None,
    run_id: str,
    sgd_epsilon: float | None,
    gram_run: ChargedRun | None = None,
    validation_run: ChargedRun | None = None,
) -> dict[str, Any]:
    """The lineage's DP entry: the charged mechanisms and their composed epsilon."""
    sgd = Mechanism(plan.noise_multiplier, plan.sample_rate, plan.steps)
    release = None if release_run is None else release_run.charge.mechanism
    gram = None if gram_run is None else gram_run.charge.mechanism
    validation = None if validation_run is None else validation_run.charge.mechanism
    mechanisms = [m for m in (release, gram, validation, sgd) if m is not None]
    config = DpEaseConfig()
    return {
        "dp_run_id": run_id,
        "noise_multiplier": plan.noise_multiplier,
        "sample_rate": plan.sample_rate,
        "steps": plan.steps,
        "delta": plan.delta,
        "max_grad_norm": plan.max_grad_norm,
        "epsilon": epsilon_of(mechanisms, plan.delta),
        "dp_sgd_epsilon": sgd_epsilon,
        "popularity_release": None
        if release is None
        else {
            "dp_run_id": None if release_run is None else release_run.id,
            "noise_multiplier": release.noise_multiplier,
            "contribution_cap": CONTRIBUTION_CAP,
        },
        "ease_release": None
        if gram is None or gram_run is None
        else {
            "dp_run_id": gram_run.id,
            "noise_multiplier": gram.noise_multiplier,
            "head": config.head,
            "cap": config.cap,
            "content_prior": config.prior,
            "prior_neighbours": config.prior_neighbours,
        },
        "validation_release": None
        if validation is None or validation_run is None
        else {"dp_run_id": validation_run.id, "noise_multiplier": validation.noise_multiplier},
        "accountant": "rdp",
        "secure_mode": plan.secure_mode,
    }
