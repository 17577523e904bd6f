"""A tenant's release in flight as serving splits traffic for it (`atlasrec.releases`).

- **Canary**: a user is in the canary share when a keyed hash of its pseudonym (salted per
  rollout) falls in the step's first `canary_percent` of 10,000 buckets. The assignment is
  sticky, and a user stays in the canary as the share grows. Anonymous sessions stay live.
- **Shadow**: a sampled share of live requests is also scored by the candidate on a worker
  thread after the live answer was recorded, never on the response path and never returned.
  Its record (arm `shadow`, `shadow_of` the live request) goes to the request log with its
  timings; overlap@k with the live answer, latency and policy violations (an independent
  re-check of every item against the request's context) go to Prometheus. At most
  `MAX_PENDING` shadow requests wait; more are dropped (and counted), so shadow traffic can
  never slow the live path down. A scoring starts only when the process serves no live
  request (`InFlight`), or after `MAX_DEFER_S`, and pauses between its stages the same way
  (a live request that arrives meanwhile waits for one shadow stage at most, not the whole
  scoring; the pauses count toward no stage's timing): shadow work fills the gaps between
  live requests instead of competing with them for the CPU and the GIL. Its thread
  runs at the lowest CPU priority (nice 19, `lowest_priority`): where the cores are busy,
  the kernel runs the live requests of every worker first.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import random
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from atlasrec.eventlog.records import ServedRecord
from serving.pipeline import Query, Served, recommend, served_record
from serving.state import ServingState

log = logging.getLogger(__name__)

BUCKETS = 10_000
MAX_PENDING = 64
MAX_DEFER_S = 0.5
"""Longest a shadow scoring waits for the process to have no live request in flight."""
LOWEST_NICE = 19


def lowest_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux: nice is per thread).

    Where the platform has no per-thread priority, the thread keeps its own: the wait for
    idle (`InFlight`) still keeps shadow work off the busy path.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_NICE)
    except (AttributeError, OSError) as refused:
        log.warning("shadow scoring keeps its thread's CPU priority: %s", refused)


class InFlight:
    """How many live requests this process is serving; lets background work wait for none."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Count one live request while the block runs."""
        with self._changed:
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                if self._count == 0:
                    self._changed.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no live request is in flight; whether that happened within `timeout_s`."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout_s)


@dataclass(frozen=True, eq=False)
class Arms:
    """The candidate a release in flight serves beside the live model, and its shares."""

    version: str
    state: ServingState
    phase: str
    """`shadow` or `canary`."""
    canary_percent: float
    shadow_percent: float
    salt: bytes

    @classmethod
    def of(cls, version: str, state: ServingState, phase: str, plan: Mapping[str, Any]) -> Arms:
        """The arms of a release in flight from its registry plan."""
        step = int(plan.get("step", -1))
        steps = list(plan.get("canary_steps", []))
        canary = float(steps[step]) if phase == "canary" and 0 <= step < len(steps) else 0.0
        shadow = float(plan.get("shadow_percent", 0.0)) if phase == "shadow" else 0.0
        return cls(version, state, phase, canary, shadow, str(plan.get("salt", "")).encode())

    @property
    def shares(self) -> tuple[str, str, float, float]:
        """What a change of plan changes: version, phase and both shares."""
        return self.version, self.phase, self.canary_percent, self.shadow_percent

    def canary(self, user_key: str | None) -> bool:
        """Whether this user is served by the candidate (sticky per rollout)."""
        if self.canary_percent <= 0 or user_key is None:
            return False
        return bucket(self.salt, user_key) < self.canary_percent * BUCKETS / 100

    def shadowed(self) -> bool:
        """Whether this live request is also scored by the candidate (sampled)."""
        return self.shadow_percent > 0 and random.random() * 100 < self.shadow_percent


def bucket(salt: bytes, user_key: str) -> int:
    """The user's bucket in [0, BUCKETS): a keyed hash of its pseudonym."""
    digest = hmac.new(salt, user_key.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def violations(state: ServingState, query: Query, items: Sequence[str]) -> int:
    """Items the request's context forbids: blocked, out of stock, age, country, filters."""
    bad = 0
    for item_id in items:
        at = state.position.get(item_id)
        if at is None:
            bad += 1
            continue
        category = state.category_names.get(int(state.categories[at]))
        allowed = state.policies[at].allows(query.user_age, query.country)
        in_filters = query.categories is None or category in query.categories
        bad += not (allowed and in_filters and item_id not in query.exclude_items)
    return bad


def overlap(live: Sequence[str], shadow: Sequence[str], k: int) -> float:
    """The share of the live top-k the candidate also put in its top-k."""
    top = set(live[:k])
    return len(top & set(shadow[:k])) / len(top) if top else 1.0


Observe = Callable[[str, str, float, float, int], None]
"""`(tenant, outcome, seconds, overlap, violations)` of each shadow request."""


class ShadowScorer:
    """Scores sampled live requests with the candidate on one worker thread, off the path."""

    def __init__(
        self,
        budgets: Mapping[str, float],
        keep: Callable[[Any, ServedRecord], None],
        issue_id: Callable[[str, str], str],
        observe: Observe,
        in_flight: InFlight,
    ) -> None:
        self._budgets = budgets
        self._keep = keep
        self._issue_id = issue_id
        self._observe = observe
        self._in_flight = in_flight
        self._slots = threading.BoundedSemaphore(MAX_PENDING)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shadow", initializer=lowest_priority)

    def submit(self, runtime: Any, arms: Arms, query: Query, live: Served, request_id: str) -> bool:
        """Queue a shadow scoring of a live request; False (dropped) when too many wait."""
        tenant = runtime.scope.tenant_id
        if not self._slots.acquire(blocking=False):
            self._observe(tenant, "dropped", 0.0, 0.0, 0)
            return False
        self._pool.submit(self._score, runtime, arms, query, live, request_id)
        return True

    def _score(self, runtime: Any, arms: Arms, query: Query, live: Served, request_id: str) -> None:
        tenant = runtime.scope.tenant_id
        self._in_flight.wait_idle(MAX_DEFER_S)
        try:
            shadow = recommend(
                arms.state, runtime.online, query, self._budgets, pause=self._make_way
            )
            items = [i for i, _ in shadow.items]
            live_items = [i for i, _ in live.items]
            bad = violations(runtime.state, query, items)
            self._keep(runtime.scope, self._shadow_record(request_id, query, shadow, tenant, bad))
            total_s = shadow.timings_ms.get("total", 0.0) / 1000
            self._observe(tenant, "scored", total_s, overlap(live_items, items, query.k), bad)
        except Exception:
            log.exception("shadow scoring of %s's %s failed", tenant, arms.version)
            failed = Served([], arms.version, False, ["error"], {"total": 0.0})
            self._keep(runtime.scope, self._shadow_record(request_id, query, failed, tenant))
            self._observe(tenant, "error", 0.0, 0.0, 0)
        finally:
            self._slots.release()

    def _make_way(self) -> None:
        """Between stages: let the live requests that arrived meanwhile run first."""
        self._in_flight.wait_idle(MAX_DEFER_S)

    def _shadow_record(
        self, live_id: str, query: Query, served: Served, tenant: str, bad: int = 0
    ) -> ServedRecord:
        own_id = self._issue_id(tenant, uuid.uuid4().hex)
        return served_record(
            own_id, query, served, arm="shadow", shadow_of=live_id, policy_violations=bad
        )

    def idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued shadow scoring is done; whether it was within `timeout_s`."""
        done = self._pool.submit(lambda: None)  # one worker: it runs after what was queued
        try:
            done.result(timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop taking work; finish what was queued."""
        self._pool.shutdown(wait=True)
