"""The rollout analysis' decisions on synthetic traffic: guardrails, SRM, non-inferiority."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from atlasrec import outcomes, rollout_analysis
from atlasrec.clock import utcnow
from atlasrec.dataplane.tables import ServedRequest
from atlasrec.evaluation.online import Outcome
from atlasrec.tenancy import Region, Scope

SCOPE = Scope("shop", Region.EU)
PLAN = {"canary_steps": [50, 100], "step": 0, "min_requests": 200}


def request(n: int, arm: str, user: str, ms: float = 10.0) -> ServedRequest:
    return ServedRequest(
        request_id=f"{n:032x}",
        tenant_id="shop",
        served_at=utcnow(),
        model_version="v",
        user_key=user,
        k=10,
        items=[f"i{j}" for j in range(10)],
        cold_start=False,
        degraded=[],
        timings_ms={"total": ms},
        arm=arm,
    )


def traffic(
    monkeypatch: pytest.MonkeyPatch,
    users: dict[str, int],
    ctr: dict[str, float],
    ms: dict[str, float] | None = None,
) -> list[ServedRequest]:
    """Users per arm, 2 requests each; each shown item clicked with the arm's CTR."""
    rng = np.random.default_rng(0)
    rows: list[ServedRequest] = []
    clicks: list[Outcome] = []
    n = 0
    for arm, count in users.items():
        for u in range(count):
            for _ in range(2):
                row = request(n, arm, f"{arm}-{u}", (ms or {}).get(arm, 10.0))
                rows.append(row)
                n += 1
                clicks += [
                    Outcome(row.request_id, i, None, "click")
                    for i in row.items
                    if rng.random() < ctr[arm]
                ]
    monkeypatch.setattr(outcomes, "_outcomes_since", lambda *_, **__: clicks)
    return rows


def judge(rows: list[ServedRequest], phase: str = "canary", plan: dict[str, Any] = PLAN):  # type: ignore[no-untyped-def]
    return rollout_analysis._judge(None, SCOPE, phase, plan, rows, "ctr")  # type: ignore[arg-type]


def test_a_candidate_clicked_less_is_rolled_back_and_an_equal_one_advances(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worse = judge(traffic(monkeypatch, {"canary": 400, "live": 400}, {"canary": 0.02, "live": 0.2}))
    assert worse[0] == "rollback" and "worse" in worse[1]
    assert worse[2]["difference_upper"] < -worse[2]["margin"]
    equal = judge(
        traffic(monkeypatch, {"canary": 4000, "live": 4000}, {"canary": 0.2, "live": 0.2})
    )
    assert equal[0] == "advance" and equal[2]["difference_lower"] > -equal[2]["margin"]
    early = judge(traffic(monkeypatch, {"canary": 50, "live": 50}, {"canary": 0.2, "live": 0.2}))
    assert early[0] == "wait"


def test_a_sample_ratio_mismatch_and_a_slow_candidate_are_rolled_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    skewed = judge(traffic(monkeypatch, {"canary": 100, "live": 400}, {"canary": 0.2, "live": 0.2}))
    assert skewed[0] == "rollback" and "sample ratio mismatch" in skewed[1]
    slow = traffic(
        monkeypatch, {"canary": 50, "live": 50}, {"canary": 0.2, "live": 0.2}, {"canary": 400.0}
    )
    decision = judge(slow)
    assert decision[0] == "rollback" and "p99" in decision[1]


def test_the_last_step_promotes_on_the_guardrails_and_enough_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    last = {**PLAN, "step": 1}
    rows = traffic(monkeypatch, {"canary": 150}, {"canary": 0.0})
    assert judge(rows, plan=last)[0] == "advance"
    assert judge(rows[:100], plan=last)[0] == "wait"
