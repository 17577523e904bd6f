"""`charged_run` and `DpBudget`: reserve, audit and close, over any `RunStore`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasrec.dataplane.dp_runs import DpRunTable, budget_transactions
from atlasrec.dataplane.tables import DpRun
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from privacy.accounting import Mechanism, epsilon
from privacy.budget import (
    CHARGED,
    TOLERANCE,
    BudgetExceededError,
    BudgetState,
    Charge,
    ChargedRun,
    DpBudget,
    RunStore,
    charged_run,
)
from tests.utils.factories import make_tenant

DELTA = 1e-6
RUN = Mechanism(3.0, 0.05, 100)


class MemoryRuns:
    """A `RunStore` in memory: what a storage backend must do for the budget."""

    def __init__(self) -> None:
        self.tenant_id = "shop"
        self.runs: dict[str, dict[str, Any]] = {}
        self.audits: list[tuple[str, str, dict[str, Any]]] = []
        self.locks = 0

    def lock(self) -> None:
        self.locks += 1

    def mechanisms(self) -> list[Mechanism]:
        return [r["run"].charge.mechanism for r in self.runs.values()]

    def spent(self) -> float:
        return max((r["run"].epsilon_total for r in self.runs.values()), default=0.0)

    def add(self, run: ChargedRun) -> None:
        self.runs[run.id] = {"run": run, "status": "running", "details": {}}

    def finish(self, run_id: str, status: str, details: Mapping[str, Any]) -> None:
        self.runs[run_id].update(status=status, details=dict(details))

    def audit(self, action: str, subject: str, details: Mapping[str, Any]) -> None:
        self.audits.append((action, subject, dict(details)))


def transactions(store: MemoryRuns) -> Any:
    actions: list[str] = []

    @contextmanager
    def transaction(action: str) -> Iterator[RunStore]:
        actions.append(action)
        yield store

    transaction.actions = actions  # type: ignore[attr-defined]
    return transaction


def test_a_block_that_returns_closes_its_runs_completed_with_the_model_version() -> None:
    store = MemoryRuns()
    transaction = transactions(store)
    charges = [Charge(RUN, "popularity"), Charge(RUN, "train")]
    with charged_run(
        transaction, purpose="train", cap=10.0, delta=DELTA, plan=lambda _: charges
    ) as c:
        assert [r["status"] for r in store.runs.values()] == ["running", "running"]
        c.model_version = "v1"
    assert [(r["status"], r["details"]) for r in store.runs.values()] == [
        ("completed", {"model_version": "v1"})
    ] * 2
    assert [a[:2] for a in store.audits] == [(CHARGED, f"dp_run:{ch.id}") for ch in charges]
    assert store.audits[1][2]["epsilon_total"] == pytest.approx(epsilon([RUN, RUN], DELTA))
    assert transaction.actions == ["train.reserve", "train.finish"]


def test_a_block_that_raises_closes_its_runs_failed_and_keeps_the_charge() -> None:
    store = MemoryRuns()
    with (
        pytest.raises(RuntimeError, match="diverged"),
        charged_run(
            transactions(store),
            purpose="federation",
            cap=10.0,
            delta=DELTA,
            plan=lambda _: [Charge(RUN, "federation")],
        ),
    ):
        raise RuntimeError("diverged")
    [run] = store.runs.values()
    assert run["status"] == "failed" and store.spent() > 0


def test_a_plan_that_refuses_charges_nothing_and_runs_nothing() -> None:
    store = MemoryRuns()
    ran = []

    def refuse(state: BudgetState) -> list[Charge]:
        raise BudgetExceededError(f"{state.remaining} left")

    with (
        pytest.raises(BudgetExceededError),
        charged_run(transactions(store), purpose="train", cap=1.0, delta=DELTA, plan=refuse),
    ):
        ran.append(True)
    assert ran == [] and store.runs == {} and store.audits == []


@settings(max_examples=5, deadline=None)  # the accountant takes ~0.1 s per composition
@given(
    cap=st.floats(0.2, 8.0),
    sigmas=st.lists(st.floats(0.6, 6.0), min_size=1, max_size=3),
)
def test_reserve_never_composes_past_the_cap(cap: float, sigmas: list[float]) -> None:
    store = MemoryRuns()
    budget = DpBudget(store, cap=cap, delta=DELTA)
    for sigma in sigmas:
        mechanism = Mechanism(sigma, 0.05, 50)
        after = epsilon([*store.mechanisms(), mechanism], DELTA)
        try:
            budget.reserve(Charge(mechanism, "train"))
        except BudgetExceededError:
            assert after > cap + TOLERANCE
        else:
            assert after <= cap + TOLERANCE and budget.state().spent == after
        state = budget.state()
        assert state.spent <= cap + TOLERANCE
        assert state.remaining == pytest.approx(max(0.0, cap - state.spent))
    assert store.locks == len(sigmas)


@given(cap=st.floats(0.01, 100.0), spent=st.floats(0.0, 200.0))
def test_budget_state_agrees_with_itself(cap: float, spent: float) -> None:
    state = BudgetState(cap, spent)
    assert state.remaining >= 0.0
    assert state.fits(spent) == (spent <= cap + TOLERANCE)
    if state.exhausted:
        assert state.remaining <= 2 * TOLERANCE and not state.fits(spent + 3 * TOLERANCE)
    else:
        assert state.remaining > TOLERANCE * 0.5 and state.fits(spent + state.remaining)


def test_the_region_table_is_a_run_store(platform: Platform) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    plane = platform.plane(Region.EU)
    with charged_run(
        budget_transactions(plane, scope, actor="t"),
        purpose="train",
        cap=10.0,
        delta=DELTA,
        plan=lambda _: [Charge(RUN, "train", {"users": 3})],
    ) as charged:
        charged.model_version = "v9"
    with plane.session(scope, actor="t", action="read") as s:
        [row] = DpRunTable(s, plane.ledger).runs()
    assert isinstance(row, DpRun) and row.status == "completed" and row.completed_at
    assert row.details == {"users": 3, "model_version": "v9"}
    [record] = plane.ledger.records(tenant_id="shop", action=CHARGED, limit=None)
    assert record.subject == f"dp_run:{row.id}" and record.actor == "t"
