"""The DP budget: charged before a run starts, never exceeded, even by concurrent runs."""

from __future__ import annotations

import threading

import pytest

from atlasrec.dataplane.dp_runs import DpRunTable
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope
from privacy.accounting import Mechanism, epsilon
from privacy.budget import BudgetExceededError, Charge
from tests.utils.factories import make_tenant

RUN = Mechanism(3.0, 0.05, 100)


def reserve(platform: Platform, scope: Scope, cap: float, m: Mechanism = RUN) -> None:
    plane = platform.plane(scope.region)
    with plane.session(scope, actor="t", action="train") as s:
        DpRunTable(s, plane.ledger).budget(cap=cap, delta=1e-6).reserve(Charge(m, "train"))


def spent(platform: Platform, scope: Scope) -> tuple[int, float]:
    plane = platform.plane(scope.region)
    with plane.session(scope, actor="t", action="read") as s:
        table = DpRunTable(s, plane.ledger)
        return len(table.runs()), table.budget(cap=1.0, delta=1e-6).state().spent


def test_runs_are_charged_until_the_cap_refuses(platform: Platform) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    one = epsilon([RUN], 1e-6)
    cap = epsilon([RUN] * 3, 1e-6) + 0.01
    for _ in range(3):
        reserve(platform, scope, cap)
    with pytest.raises(BudgetExceededError, match="cap is"):
        reserve(platform, scope, cap)
    runs, total = spent(platform, scope)
    assert runs == 3 and total <= cap and total > one


def test_a_refused_run_charges_nothing(platform: Platform) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    with pytest.raises(BudgetExceededError):
        reserve(platform, scope, cap=0.5)
    assert spent(platform, scope) == (0, 0.0)


def test_budgets_are_per_tenant(platform: Platform) -> None:
    a = make_tenant(platform, "shop-a", Region.EU)
    b = make_tenant(platform, "shop-b", Region.EU)
    reserve(platform, a, cap=10.0)
    assert spent(platform, b) == (0, 0.0)


def test_concurrent_runs_cannot_overspend(platform: Platform) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    cap = epsilon([RUN] * 2, 1e-6) + 0.01  # room for exactly two runs
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            reserve(platform, scope, cap)
            outcomes.append("ok")
        except BudgetExceededError:
            outcomes.append("refused")
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs, total = spent(platform, scope)
    assert runs == outcomes.count("ok") <= 2
    assert total <= cap
