"""The demo's rollout: one tenant's retrained model, released by the automatic analysis.

The retrained model is published as a candidate; `rollout start` runs the offline and privacy
gates, then serves it in shadow beside live (every request also scored by the candidate, off
the response path), then to all traffic as the last canary step. Between requests to the
real regional server, the analysis (`atlasrec.rollout_analysis`, which beat runs in
production) decides each step on the guardrails: errors, policy violations, p99 against
live's. Each decision and its numbers are printed, as the ledger keeps them.
"""

from __future__ import annotations

import csv
import time
from itertools import islice

import httpx
from rich.console import Console
from rich.table import Table

from atlasrec.datasets import TenantDataset
from atlasrec.errors import AtlasRecError
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.releases import rollback, start, status
from atlasrec.rollout_analysis import analyse

USERS = 40
MIN_REQUESTS = 30
ROUNDS = 8
SETTLE_S = 2.5
"""A little more than the server's refresh interval (`ATLASREC_SERVING_RELOAD_S`, 2 s)."""


def rollout_demo(
    console: Console, platform: Platform, ds: TenantDataset, url: str, key: str, actor: str
) -> None:
    """Retrain `ds`'s tenant, roll the candidate out against live traffic, print each step."""
    tenant = ds.tenant_id
    before = status(platform, tenant, actor=actor)
    if len(before["releases"]) > 1:  # an earlier run rolled a retrained model out: no re-spend
        last = before["last_decision"]
        console.print(
            f"\n{tenant}'s rollout ran in an earlier run (live: {before['live']}; last decision: "
            f"{last and last['action']}); `atlasrec rollout status --tenant {tenant}` shows it"
        )
        return
    console.print(f"\nretraining {tenant} and rolling the new model out (shadow, then canary) ...")
    try:
        trained = train_tenant(platform, tenant, actor=actor)
        started = start(
            platform,
            tenant,
            actor=actor,
            version=trained.model_version,
            shadow_percent=100,
            canary_steps=[100],
            min_requests=MIN_REQUESTS,
        )
    except AtlasRecError as refused:  # a spent budget, or a gate that rolled it back
        console.print(f"rollout of {tenant}'s retrained model: {refused}")
        return
    table = Table(title=f"Rollout of {tenant}'s retrained model {trained.model_version}")
    for column in ("step", "decision", "numbers"):
        table.add_column(column)
    gates = started["gates"]
    table.add_row(
        "start",
        f"gates passed ({gates['offline']['reason']}; {gates['privacy']['reason']})",
        _numbers(gates["offline"], ("next", "live_next", "next_popularity")),
    )
    users = _users(ds)
    with httpx.Client(timeout=30.0) as client:
        for _ in range(ROUNDS):
            time.sleep(SETTLE_S)  # the server picks the step up; its records reach the DB
            for user in users:
                client.post(
                    f"{url}/v1/recommendations",
                    json={"user_id": user, "k": 10},
                    headers={"Authorization": f"Bearer {key}"},
                )
            time.sleep(SETTLE_S)
            decision = analyse(platform, tenant)
            if decision.decision == "none":
                break
            shown = ("requests", "errors", "policy_violations", "p99_ms", "live_p99_ms")
            table.add_row(decision.decision, decision.reason, _numbers(decision.numbers, shown))
    final = status(platform, tenant, actor=actor)
    if final["live"] != trained.model_version and final["shares"]["live"] < 100:
        rollback(platform, tenant, reason="the demo's rollout ran out of rounds", actor=actor)
    table.add_row("end", f"live: {status(platform, tenant, actor=actor)['live']}", "")
    console.print(table)


def _users(ds: TenantDataset) -> list[str]:
    with ds.interactions_csv.open(encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh)
        next(rows)
        return list(islice(dict.fromkeys(r[0] for r in rows), USERS))


def _numbers(numbers: dict[str, object], keys: tuple[str, ...]) -> str:
    def shown(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k} {shown(numbers[k])}" for k in keys if numbers.get(k) is not None)
