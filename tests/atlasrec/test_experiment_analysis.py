"""The experiment analysis: A/B arms against the control, the sample ratio check, interleaving."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from atlasrec import experiment_analysis, outcomes
from atlasrec.clock import utcnow
from atlasrec.dataplane.tables import Experiment, ServedRequest
from atlasrec.evaluation.online import Outcome
from atlasrec.tenancy import Region, Scope

SCOPE = Scope("shop", Region.EU)


def experiment(kind: str, arms: int = 2, split: list[float] | None = None) -> Experiment:
    return Experiment(
        tenant_id="shop",
        id="e1",
        kind=kind,
        metric="ctr",
        arms=[f"v{n}" for n in range(arms)],
        split=split or [100 / arms] * arms,
        salt="s",
        state="running",
    )


def request(n: int, arm: str, user: str, teams: str | None = None) -> ServedRequest:
    return ServedRequest(
        request_id=f"{n:032x}",
        tenant_id="shop",
        served_at=utcnow(),
        model_version="v0",
        user_key=user,
        k=10,
        items=[f"i{j}" for j in range(10)],
        cold_start=False,
        degraded=[],
        timings_ms={"total": 5.0},
        arm=arm,
        experiment_id="e1",
        teams=teams,
    )


def ab_traffic(
    monkeypatch: pytest.MonkeyPatch, users: dict[str, int], ctr: dict[str, float]
) -> list[ServedRequest]:
    """Users per arm, 2 requests each; each shown item clicked with the arm's CTR."""
    rng = np.random.default_rng(1)
    rows, clicks, n = [], [], 0
    for arm, count in users.items():
        for u in range(count):
            for _ in range(2):
                row = request(n, arm, f"{arm}-{u}")
                rows.append(row)
                n += 1
                clicks += [
                    Outcome(row.request_id, i, None, "click")
                    for i in row.items
                    if rng.random() < ctr[arm]
                ]
    monkeypatch.setattr(outcomes, "_outcomes_since", lambda *_, **__: clicks)
    monkeypatch.setattr(experiment_analysis, "_before", lambda *_: [])  # no pre-period
    return rows


def test_an_arm_clicked_more_wins_and_one_clicked_less_is_worse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = ab_traffic(monkeypatch, {"A": 600, "B": 600, "C": 600}, {"A": 0.1, "B": 0.2, "C": 0.05})
    verdict, reason, numbers = experiment_analysis._ab(None, SCOPE, experiment("ab", 3), rows)  # type: ignore[arg-type]
    assert verdict == "decided" and numbers["winner"] == "B" and "arm B (v1)" in reason
    assert numbers["comparisons"]["B"]["outcome"] == "better"
    assert numbers["comparisons"]["C"]["outcome"] == "worse"
    assert numbers["alpha_per_comparison"] == pytest.approx(0.025)  # Bonferroni over 2
    assert numbers["arms"]["A"]["users"] == 600 and numbers["arms"]["B"]["requests"] == 1200


def test_equal_arms_wait_and_too_few_users_never_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    equal = ab_traffic(monkeypatch, {"A": 500, "B": 500}, {"A": 0.1, "B": 0.1})
    assert experiment_analysis._ab(None, SCOPE, experiment("ab"), equal)[0] == "wait"  # type: ignore[arg-type]
    few = ab_traffic(monkeypatch, {"A": 30, "B": 30}, {"A": 0.0, "B": 0.9})
    verdict, _, numbers = experiment_analysis._ab(None, SCOPE, experiment("ab"), few)  # type: ignore[arg-type]
    assert verdict == "wait" and numbers["comparisons"]["B"]["outcome"] == "undecided"


def test_a_split_the_users_do_not_follow_makes_the_experiment_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = ab_traffic(monkeypatch, {"A": 300, "B": 300}, {"A": 0.1, "B": 0.1})
    verdict, reason, numbers = experiment_analysis._ab(
        None,  # type: ignore[arg-type]
        SCOPE,
        experiment("ab", split=[90, 10]),
        rows,
    )
    assert verdict == "invalid" and "sample ratio mismatch" in reason
    assert numbers["srm_p"] < 0.001


def test_cuped_adjusts_by_each_users_clicks_before_and_narrows_the_sequence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(3)
    rows: list[ServedRequest] = []
    before: list[ServedRequest] = []
    clicks: list[Outcome] = []
    for u in range(400):
        arm, propensity = "AB"[u % 2], rng.gamma(0.5, 2.0)  # heavy and light clickers
        lift = 1.3 if arm == "B" else 1.0
        for period, ctr in ((before, 0.05 * propensity), (rows, 0.05 * propensity * lift)):
            for _ in range(3):
                row = request(len(rows) + len(before), arm, f"u{u}")
                period.append(row)
                clicks += [
                    Outcome(row.request_id, i, None, "click")
                    for i in row.items
                    if rng.random() < ctr
                ]
    monkeypatch.setattr(outcomes, "_outcomes_since", lambda *_, **__: clicks)
    found = {}
    for name, prior in (("plain", []), ("cuped", before)):
        monkeypatch.setattr(experiment_analysis, "_before", lambda *_, p=prior: p)
        found[name] = experiment_analysis._ab(None, SCOPE, experiment("ab"), rows)[2]  # type: ignore[arg-type]
    plain, adjusted = found["plain"], found["cuped"]
    assert plain["cuped"] == {"theta": 0.0, "covered": 0, "variance_ratio": 1.0}
    assert adjusted["cuped"]["covered"] == 400 and adjusted["cuped"]["variance_ratio"] < 0.6
    arms = adjusted["arms"]
    effect = arms["B"]["mean"] - arms["A"]["mean"]
    assert arms["B"]["adjusted_mean"] - arms["A"]["adjusted_mean"] == pytest.approx(
        effect, abs=0.01
    )

    def width(numbers: dict[str, Any]) -> float:
        b = numbers["comparisons"]["B"]
        return float(b["difference_upper"] - b["difference_lower"])

    assert width(adjusted) < 0.8 * width(plain)


def test_interleaving_counts_each_requests_vote_by_team(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [request(n, "AB", f"u{n}", teams="ABABABABAB") for n in range(40)]
    # B's first item (position 1) is clicked in 30 lists, A's (position 0) in 2
    clicks = [Outcome(r.request_id, "i1", 1, "click") for r in rows[:30]]
    clicks += [Outcome(r.request_id, "i0", 0, "click") for r in rows[30:32]]
    monkeypatch.setattr(outcomes, "_outcomes_since", lambda *_, **__: clicks)
    verdict, reason, numbers = experiment_analysis._interleave(
        None,  # type: ignore[arg-type]
        SCOPE,
        experiment("interleave"),
        rows,
    )
    assert numbers["wins"] == {"A": 2, "B": 30} and numbers["ties"] == 8
    assert verdict == "decided" and numbers["winner"] == "B" and "arm B (v1)" in reason
    assert numbers["first_decided_at"] is not None and numbers["first_decided_at"] <= 30
