"""The release registry: candidates, one live version (what LATEST names), promotion, rollback."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlasrec.errors import AtlasRecError, ConflictError, InvalidInputError, RefusedError
from atlasrec.models.bundle import KIND
from atlasrec.platform import Platform
from atlasrec.releases import (
    NEXT,
    State,
    advance,
    in_flight,
    promote,
    register,
    rollback,
    start,
    status,
)
from atlasrec.tenancy import Region, Scope, SharingPolicy
from tests.utils import releases

SHOP = Scope("shop", Region.EU)


@pytest.fixture
def shop(platform: Platform) -> Platform:
    platform.create_tenant("shop", region=Region.EU, sharing=SharingPolicy.SOLO, actor="test")
    return platform


def publish(
    platform: Platform, *, live: bool = False, metadata: dict[str, object] | None = None
) -> tuple[str, State]:
    return releases.publish(platform, SHOP, live=live, metadata=metadata)


def pointed(platform: Platform) -> str | None:
    return platform.plane(Region.EU).artifacts.pointed(SHOP, KIND, actor="test")


def states(platform: Platform) -> dict[str, str]:
    return {r["version"]: r["state"] for r in status(platform, "shop", actor="t")["releases"]}


def test_the_first_model_is_live_and_later_ones_are_candidates_until_promoted(
    shop: Platform,
) -> None:
    first, state = publish(shop)
    assert state is State.LIVE and pointed(shop) == first
    second, state = publish(shop)
    assert state is State.CANDIDATE and pointed(shop) == first  # serving keeps the live one
    done = promote(shop, "shop", reason="offline gate passed", actor="test", numbers={"ndcg": 0.3})
    assert (done["live"], done["retired"]) == (second, first) and pointed(shop) == second
    assert states(shop) == {first: "retired", second: "live"}
    records = shop.plane(Region.EU).ledger.records(tenant_id="shop", action="release.promoted")
    details = json.loads(records[-1].details)
    assert details["numbers"] == {"ndcg": 0.3} and details["reason"] == "offline gate passed"
    third, state = publish(shop, live=True)  # train --promote
    assert state is State.LIVE and pointed(shop) == third
    assert states(shop) == {first: "retired", second: "retired", third: "live"}


def test_a_rollback_of_the_live_version_brings_the_previous_one_back(shop: Platform) -> None:
    first, _ = publish(shop)
    second, _ = publish(shop, live=True)
    done = rollback(shop, "shop", reason="CTR fell", actor="test")
    assert (done["rolled_back"], done["live"]) == (second, first) and pointed(shop) == first
    assert states(shop) == {first: "live", second: "rolled_back"}
    with pytest.raises(InvalidInputError, match="no earlier live version"):
        rollback(shop, "shop", reason="again", actor="test")
    assert pointed(shop) == first
    last = status(shop, "shop", actor="t")["last_decision"]
    assert last["action"] == "release.rolled_back" and last["details"]["reason"] == "CTR fell"


def test_bad_requests_name_the_tenant_and_change_nothing(shop: Platform) -> None:
    first, _ = publish(shop)
    with pytest.raises(InvalidInputError, match="no candidate or release in flight"):
        promote(shop, "shop", reason="r", actor="test")
    with pytest.raises(InvalidInputError, match="has no model version 'nope'"):
        promote(shop, "shop", reason="r", actor="test", version="nope")
    with pytest.raises(ConflictError, match="is live; it cannot go live"):
        promote(shop, "shop", reason="r", actor="test", version=first)
    with pytest.raises(InvalidInputError, match="--reason"):
        rollback(shop, "shop", reason="  ", actor="test")
    assert states(shop) == {first: "live"} and pointed(shop) == first


def test_latest_is_put_back_when_the_registry_cannot_commit(
    shop: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = publish(shop)
    second, _ = publish(shop)
    ledger = shop.plane(Region.EU).ledger

    def broken(**_: object) -> None:
        raise RuntimeError("ledger down")

    monkeypatch.setattr(ledger, "append", broken)
    with pytest.raises(RuntimeError):
        promote(shop, "shop", reason="r", actor="test")
    monkeypatch.undo()
    assert pointed(shop) == first and states(shop) == {first: "live", second: "candidate"}


def test_a_model_live_before_the_registry_joins_it_as_live(shop: Platform) -> None:
    plane = shop.plane(Region.EU)
    old = plane.artifacts.publish(SHOP, KIND, lambda f: (f / "w").write_bytes(b"w"), actor="t")
    assert states(shop) == {old.version: "live"}
    _new, state = publish(shop)
    assert state is State.CANDIDATE and pointed(shop) == old.version


def test_another_regions_tenant_is_refused_and_audited(shop: Platform) -> None:
    shop.create_tenant("far", region=Region.US, sharing=SharingPolicy.SOLO, actor="test")
    far = Scope("far", Region.US)
    with pytest.raises(AtlasRecError):
        register(shop.plane(Region.EU), far, "20261207T000000000000Z-abcdef", live=True, actor="t")
    refused = shop.plane(Region.EU).ledger.records(action="boundary.refused")
    assert any(r.tenant_id == "far" for r in refused)


OPS = st.lists(
    st.sampled_from(["publish", "publish_live", "promote", "rollback", "start", "advance"]),
    max_size=8,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_any_sequence_keeps_one_live_version_named_by_latest(
    shop: Platform, ops: list[str]
) -> None:
    """Whatever is asked, in any order: at most one live version, LATEST names it, and every
    state change the registry made is one the lifecycle allows."""
    before = states(shop)
    for op in ops:
        try:
            if op.startswith("publish"):
                publish(shop, live=op == "publish_live")
            elif op == "promote":
                promote(shop, "shop", reason="r", actor="test")
            elif op == "start":
                start(shop, "shop", actor="test", shadow_percent=5, canary_steps=[50, 100])
            elif op == "advance":
                advance(shop, "shop", reason="r", actor="test")
            else:
                rollback(shop, "shop", reason="r", actor="test")
        except (InvalidInputError, ConflictError):
            pass
        after = states(shop)
        live = [v for v, s in after.items() if s == "live"]
        assert len(live) == (1 if after else 0)
        assert sum(s in ("shadow", "canary") for s in after.values()) <= 1
        assert pointed(shop) == (live[0] if live else None)
        for version, state in after.items():
            was = before.get(version)
            assert was is None or was == state or State(state) in NEXT[State(was)]
        before = after


def test_a_rollout_goes_shadow_then_canary_steps_then_live(shop: Platform) -> None:
    first, _ = publish(shop)
    second, _ = publish(shop)
    started = start(shop, "shop", actor="test", shadow_percent=10, canary_steps=[5, 50, 100])
    assert (started["version"], started["state"]) == (second, "shadow")
    assert started["plan"]["step"] == -1 and len(started["plan"]["salt"]) == 16
    assert in_flight(shop.plane(Region.EU), SHOP, actor="t").version == second
    assert status(shop, "shop", actor="t")["shares"] == {"live": 100, "canary": 0, "shadow": 10}
    shares = []
    for _ in range(3):
        shares.append(advance(shop, "shop", reason="gates held", actor="test")["canary_percent"])
        assert pointed(shop) == first  # the live model keeps LATEST through every step
    assert shares == [5, 50, 100]
    assert status(shop, "shop", actor="t")["shares"] == {"live": 0, "canary": 100, "shadow": 0}
    done = advance(shop, "shop", reason="last step held", actor="test", numbers={"ctr": 0.1})
    assert done["state"] == "live" and pointed(shop) == second
    assert states(shop) == {first: "retired", second: "live"}
    assert in_flight(shop.plane(Region.EU), SHOP, actor="t") is None
    actions = [
        r.action for r in shop.plane(Region.EU).ledger.records(tenant_id="shop", action="release.")
    ]
    assert actions.count("release.advanced") == 3 and actions[-1] == "release.promoted"


def test_a_rollout_in_flight_is_rolled_back_and_overlapping_or_bad_plans_are_refused(
    shop: Platform,
) -> None:
    first, _ = publish(shop)
    second, _ = publish(shop)
    third, _ = publish(shop)
    with pytest.raises(InvalidInputError, match="--canary-steps 50,25"):
        start(shop, "shop", actor="test", canary_steps=[50, 25])
    with pytest.raises(InvalidInputError, match="--shadow"):
        start(shop, "shop", actor="test", shadow_percent=120)
    start(shop, "shop", actor="test", version=second)
    with pytest.raises(ConflictError, match="may not overlap"):
        start(shop, "shop", actor="test", version=third)
    done = rollback(shop, "shop", reason="canary CTR worse", actor="test")
    assert (done["rolled_back"], done["live"]) == (second, first) and pointed(shop) == first
    assert states(shop) == {first: "live", second: "rolled_back", third: "candidate"}
    with pytest.raises(ConflictError, match="is rolled_back"):
        start(shop, "shop", actor="test", version=second)


def validated(next_: float, profile: float, popularity: float = 0.1) -> dict[str, object]:
    """A lineage whose default order (`next`) scored these validation NDCG@10s."""
    scores = {
        "next": {"next": next_, "popularity": popularity},
        "profile": {"next": profile, "popularity": popularity},
    }
    return {"default_order": {"chosen": "next", "weight": 1.0, "ndcg_at_10": scores}}


@pytest.mark.parametrize(
    ("lineage", "failed"),
    [
        (validated(0.05, 0.3), "offline gate: below popularity on next"),
        (validated(0.25, 0.3), "offline gate: below 0.95x the live model on next"),
        ({"dp": {"epsilon": 4.0, "dp_run_id": "run-x"}}, "privacy gate: its DP run is not"),
        ({"parent_backbone": {"version": "b1", "region": "eu"}}, "privacy gate: a solo tenant"),
    ],
)
def test_a_candidate_failing_a_gate_is_rolled_back_before_anyone_sees_it(
    shop: Platform, lineage: dict[str, object], failed: str
) -> None:
    live, _ = publish(shop, metadata=validated(0.3, 0.3))
    candidate, _ = publish(shop, metadata=lineage)
    with pytest.raises(RefusedError, match="rolled back"):
        start(shop, "shop", actor="test")
    assert states(shop) == {live: "live", candidate: "rolled_back"}
    assert pointed(shop) == live
    last = status(shop, "shop", actor="t")["last_decision"]
    assert last["action"] == "release.rolled_back" and last["details"]["reason"].startswith(failed)


def test_a_tampered_candidate_fails_the_privacy_gate(shop: Platform) -> None:
    publish(shop)
    candidate, _ = publish(shop, metadata=validated(0.3, 0.3))
    path = shop.plane(Region.EU).artifacts.get(SHOP, KIND, candidate, actor="t").path
    (path / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(RefusedError, match="privacy gate"):
        start(shop, "shop", actor="test")


def test_a_candidate_passing_both_gates_starts_with_the_gates_numbers(shop: Platform) -> None:
    publish(shop, metadata=validated(0.3, 0.3))
    publish(shop, metadata=validated(0.29, 0.4))  # within 0.95x of live on next
    gates = start(shop, "shop", actor="test")["gates"]
    assert gates["offline"]["passed"] and gates["privacy"]["passed"]
    assert gates["offline"]["live_next"] == 0.3 and gates["offline"]["next"] == 0.29
