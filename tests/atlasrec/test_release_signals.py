"""Release signals read from the ledger: standing rollbacks, time in flight, invalid experiments."""

from __future__ import annotations

import pytest

from atlasrec.experiments import create, decide
from atlasrec.platform import Platform
from atlasrec.release_signals import invalid_experiments, release_signals
from atlasrec.releases import advance, rollback, start
from atlasrec.tenancy import Region, Scope, SharingPolicy
from tests.utils.releases import publish

EU = Region.EU
SHOP = Scope("shop", EU)


@pytest.fixture
def shop(platform: Platform) -> Platform:
    platform.create_tenant("shop", region=EU, sharing=SharingPolicy.SOLO, actor="test")
    platform.create_tenant("label", region=EU, sharing=SharingPolicy.SOLO, actor="test")
    return platform


def test_a_rollback_stands_until_the_next_release_starts_and_flight_time_is_measured(
    shop: Platform,
) -> None:
    assert release_signals(shop, EU) == {}
    publish(shop, SHOP)
    publish(shop, SHOP)
    start(shop, "shop", actor="t", canary_steps=[50, 100])
    flying = release_signals(shop, EU)["shop"]
    assert not flying.rolled_back and flying.in_flight_s is not None
    assert 0 <= flying.in_flight_s < 60
    rollback(shop, "shop", reason="canary CTR worse", actor="t")
    assert release_signals(shop, EU)["shop"].rolled_back
    assert release_signals(shop, EU)["shop"].in_flight_s is None
    publish(shop, SHOP)
    start(shop, "shop", actor="t", canary_steps=[100])
    assert not release_signals(shop, EU)["shop"].rolled_back  # a new release clears it
    advance(shop, "shop", reason="held", actor="t")  # past the last step: promoted
    promoted = release_signals(shop, EU)["shop"]
    assert not promoted.rolled_back and promoted.in_flight_s is None
    assert "label" not in release_signals(shop, EU)


def test_an_invalid_experiment_stands_until_the_next_is_created(shop: Platform) -> None:
    a, _ = publish(shop, SHOP, live=True)
    b, _ = publish(shop, SHOP)
    first = create(shop, "shop", arms=[a, b], kind="ab", metric="ctr", actor="t")
    assert invalid_experiments(shop, EU) == {}
    decide(
        shop, "shop", first["id"], reason="sample ratio mismatch", result={}, actor="t", valid=False
    )
    assert invalid_experiments(shop, EU) == {"shop": True}
    second = create(shop, "shop", arms=[a, b], kind="ab", metric="ctr", actor="t")
    assert invalid_experiments(shop, EU) == {"shop": False}
    decide(shop, "shop", second["id"], reason="B better", result={}, actor="t")
    assert invalid_experiments(shop, EU) == {"shop": False}
