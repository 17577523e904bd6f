"""The experiments registry: shape checks, servable arms, no overlap, every decision audited."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from atlasrec import experiment_analysis
from atlasrec.dataplane.tables import ServedRequest
from atlasrec.errors import AtlasRecError, ConflictError, InvalidInputError, RefusedError
from atlasrec.experiments import CREATED, STOPPED, create, decide, running, status, stop
from atlasrec.models.bundle import KIND
from atlasrec.platform import Platform
from atlasrec.releases import rollback, start
from atlasrec.tenancy import Region, Scope, SharingPolicy
from tests.utils import releases

SHOP = Scope("shop", Region.EU)


@pytest.fixture
def shop(platform: Platform) -> Platform:
    platform.create_tenant("shop", region=Region.EU, sharing=SharingPolicy.SOLO, actor="test")
    return platform


def publish(platform: Platform, *, live: bool = False) -> str:
    return releases.publish(platform, SHOP, live=live)[0]


def experiments(platform: Platform) -> list[dict[str, object]]:
    return list(status(platform, "shop", actor="test")["experiments"])


def test_an_ab_experiment_runs_until_stopped_and_each_step_is_in_the_ledger(
    shop: Platform,
) -> None:
    a, b, c = publish(shop, live=True), publish(shop), publish(shop)
    made = create(
        shop, "shop", arms=[a, b, c], kind="ab", metric="ctr", split=[50, 25, 25], actor="t"
    )
    assert made["arms"] == {"A": a, "B": b, "C": c} and made["split"] == [50, 25, 25]
    found = running(shop.plane(Region.EU), SHOP, actor="t")
    assert found is not None and found.id == made["id"] and len(found.salt) == 16
    stop(shop, "shop", made["id"], reason="enough", actor="t")
    assert running(shop.plane(Region.EU), SHOP, actor="t") is None
    assert experiments(shop)[0]["state"] == "stopped"
    ledger = shop.plane(Region.EU).ledger
    (created,) = ledger.records(tenant_id="shop", action=CREATED)
    assert json.loads(created.details)["experiment"]["split"] == [50, 25, 25]
    (stopped,) = ledger.records(tenant_id="shop", action=STOPPED)
    assert json.loads(stopped.details)["reason"] == "enough"
    with pytest.raises(ConflictError, match="already stopped"):
        decide(shop, "shop", made["id"], reason="x", result={}, actor="t")


@pytest.mark.parametrize(
    ("arms", "kind", "metric", "split", "error"),
    [
        ("ab", "xy", "ctr", None, "--type 'xy'"),
        ("ab", "ab", "dwell", None, "--metric 'dwell'"),
        ("a", "ab", "ctr", None, "2 to 5 distinct"),
        ("aa", "ab", "ctr", None, "2 to 5 distinct"),
        ("abc", "interleave", "ctr", None, "2 to 2 distinct"),
        ("ab", "interleave", "ctr", [50, 50], "does not apply to interleaving"),
        ("ab", "ab", "ctr", [60, 30], "sums to 90, not 100"),
        ("ab", "ab", "ctr", [100], "one positive percentage per arm"),
        ("ab", "ab", "ctr", [120, -20], "one positive percentage per arm"),
        ("ab", "ab", "ctr", [float("nan"), 50], "one positive percentage per arm"),
    ],
)
def test_a_bad_shape_is_refused_naming_what_is_wrong_and_writes_nothing(
    shop: Platform,
    arms: str,
    kind: str,
    metric: str,
    split: list[float] | None,
    error: str,
) -> None:
    versions = {"a": publish(shop, live=True), "b": publish(shop), "c": publish(shop)}
    with pytest.raises(InvalidInputError, match=error) as refused:
        create(
            shop,
            "shop",
            arms=[versions[x] for x in arms],
            kind=kind,
            metric=metric,
            split=split,
            actor="t",
        )
    assert "tenant 'shop'" in str(refused.value)
    assert experiments(shop) == []
    assert shop.plane(Region.EU).ledger.records(tenant_id="shop", action=CREATED) == []


def test_unknown_or_rolled_back_versions_are_refused(shop: Platform) -> None:
    live, candidate = publish(shop, live=True), publish(shop)
    with pytest.raises(InvalidInputError, match="has no model version 'nope'"):
        create(shop, "shop", arms=[live, "nope"], kind="ab", metric="ctr", actor="t")
    start(shop, "shop", actor="t")
    rollback(shop, "shop", reason="bad", actor="t")
    with pytest.raises(ConflictError, match="is rolled_back"):
        create(shop, "shop", arms=[live, candidate], kind="ab", metric="ctr", actor="t")
    assert experiments(shop) == []


def test_experiments_and_rollouts_never_overlap_on_a_tenants_traffic(shop: Platform) -> None:
    live, b, c = publish(shop, live=True), publish(shop), publish(shop)
    made = create(shop, "shop", arms=[live, b], kind="interleave", metric="ctr", actor="t")
    with pytest.raises(ConflictError, match=f"experiment {made['id']!r} is running"):
        create(shop, "shop", arms=[live, c], kind="ab", metric="ctr", actor="t")
    with pytest.raises(ConflictError, match="a rollout may not overlap it"):
        start(shop, "shop", actor="t", version=c)
    stop(shop, "shop", made["id"], reason="done", actor="t")
    start(shop, "shop", actor="t", version=c)
    with pytest.raises(ConflictError, match=r"rollout of .* is in flight"):
        create(shop, "shop", arms=[live, b], kind="ab", metric="ctr", actor="t")
    assert len(experiments(shop)) == 1


def test_an_arm_failing_the_privacy_gate_is_refused(shop: Platform) -> None:
    live, candidate = publish(shop, live=True), publish(shop)
    artifact = shop.plane(Region.EU).artifacts.get(SHOP, KIND, candidate, actor="t")
    (artifact.path / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(RefusedError, match="privacy gate"):
        create(shop, "shop", arms=[live, candidate], kind="ab", metric="ctr", actor="t")
    assert experiments(shop) == []


def test_another_regions_tenant_is_refused_at_the_boundary_and_audited(shop: Platform) -> None:
    shop.create_tenant("far", region=Region.US, sharing=SharingPolicy.SOLO, actor="test")
    pinned = Platform(shop.settings.model_copy(update={"region": Region.EU}))
    with pytest.raises(AtlasRecError):
        create(pinned, "far", arms=["x", "y"], kind="ab", metric="ctr", actor="t")
    refused = shop.plane(Region.EU).ledger.records(action="boundary.refused")
    assert any(r.tenant_id == "far" for r in refused)


def test_stopping_an_unknown_experiment_or_without_a_reason_is_refused(shop: Platform) -> None:
    with pytest.raises(InvalidInputError, match="has no experiment 'nope'"):
        stop(shop, "shop", "nope", reason="x", actor="t")
    with pytest.raises(InvalidInputError, match="--reason"):
        stop(shop, "shop", "nope", reason="  ", actor="t")


def test_the_pre_period_is_the_tenants_identified_requests_of_the_14_days_before(
    shop: Platform,
) -> None:
    a, b = publish(shop, live=True), publish(shop)
    create(shop, "shop", arms=[a, b], kind="ab", metric="ctr", actor="t")
    plane = shop.plane(Region.EU)
    experiment = running(plane, SHOP, actor="t")
    assert experiment is not None
    began = experiment.created_at
    when = {
        "u-before": began - timedelta(days=1),
        "u-too-old": began - timedelta(days=15),
        "u-during": began + timedelta(seconds=1),
        None: began - timedelta(hours=1),  # an anonymous session
    }
    with plane.session(SHOP, actor="t", action="test.seed") as session:
        for n, (user, at) in enumerate(when.items()):
            session.add(
                ServedRequest(
                    request_id=f"{n:032x}",
                    tenant_id="shop",
                    served_at=at,
                    model_version=a,
                    user_key=user,
                    k=10,
                    items=["i0"],
                    cold_start=False,
                    degraded=[],
                    timings_ms={"total": 1.0},
                    arm="live",
                )
            )
    assert [r.user_key for r in experiment_analysis._before(plane, SHOP, experiment)] == [
        "u-before"
    ]
