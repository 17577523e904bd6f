"""Open-loop traffic over both serving processes, with client-side failover, and its tally.

Every request is due at a fixed rate whatever the answers (latency counts from the due
time). Requests alternate between the two processes; a request that cannot reach its
process (connection refused or reset, no answer in `TIMEOUT_S`) is sent once to the other,
as a client library or load balancer would. An HTTP status is never retried: a 5xx is
counted as one. Every acknowledged write is kept by id, with the phase it was sent in:
events (202, by event id), served requests (200, by request id) and catalog upserts
(200, by item id).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from benchmarks.serving.fixtures import raw_post
from benchmarks.serving.load import Client

TIMEOUT_S = 5.0
RATES = {"recommendations": 24.0, "events": 6.0, "catalog": 1.0}
"""Requests per second of each kind (an events request carries `EVENTS_PER_REQUEST`)."""
EVENTS_PER_REQUEST = 10
ACKED = {("events", 202), ("catalog", 200), ("catalog", 202)}
"""Answers that acknowledge a write (a catalog 202: kept in the log, applied later)."""


@dataclass
class Outcome:
    """One request: when it was due, its kind, phase, status (0: no answer), failover."""

    due: float
    kind: str
    phase: str
    status: int
    latency_ms: float
    failover: bool
    degraded: bool = False
    model_version: str = ""


@dataclass
class Tally:
    """Everything the client saw, and the writes it was acknowledged."""

    outcomes: list[Outcome] = field(default_factory=list)
    acked: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    """kind -> acknowledged id -> the phase it was sent in."""

    def statuses(self, phase: str | None = None) -> Counter[str]:
        """Status counts ('0': no answer from either process), for one phase or all."""
        return Counter(str(o.status) for o in self.outcomes if phase in (None, o.phase))


class Traffic:
    """The load, on a thread of its own, until `stop()`; `phase` labels what is sent."""

    def __init__(self, ports: list[int], api_key: str, users: list[str], items: list[str]):
        self.ports, self.api_key, self.users, self.items = ports, api_key, users, items
        self.phase = "warm-up"
        self.tally = Tally()
        self.rng = random.Random(11)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._new_items = 0

    def start(self) -> Traffic:
        """Start sending."""
        self._thread.start()
        return self

    def stop(self) -> Tally:
        """Stop sending, wait for the answers in flight; the tally."""
        self._stop.set()
        self._thread.join(timeout=60)
        return self.tally

    def last(self, kind: str, since: float) -> list[Outcome]:
        """The outcomes of one kind due since `since` (time.monotonic)."""
        return [o for o in list(self.tally.outcomes) if o.kind == kind and o.due >= since]

    async def _run(self) -> None:
        clients = [Client(port, 64) for port in self.ports]
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        start = loop.time()
        sent: Counter[str] = Counter()
        turn = 0
        while not self._stop.is_set():
            elapsed = loop.time() - start
            for kind, rate in RATES.items():
                while sent[kind] < elapsed * rate:
                    sent[kind] += 1
                    turn += 1
                    task = asyncio.create_task(self._one(clients, turn % 2, kind))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
        for client in clients:
            client.close()

    async def _one(self, clients: list[Client], first: int, kind: str) -> None:
        due, phase = time.monotonic(), self.phase
        path, body, ids = self._body(kind)
        status, answer, failover = 0, b"", False
        for attempt, n in enumerate((first, 1 - first)):
            raw = raw_post(self.ports[n], path, self.api_key, body)
            if kind == "catalog":
                raw = b"PUT" + raw[4:]
            try:
                status, answer = await asyncio.wait_for(clients[n].request(raw), TIMEOUT_S)
                failover = attempt == 1
                break
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                continue
        outcome = Outcome(due, kind, phase, status, (time.monotonic() - due) * 1000, failover)
        self._settle(outcome, answer, ids)
        self.tally.outcomes.append(outcome)

    def _body(self, kind: str) -> tuple[str, dict[str, Any], list[str]]:
        """The request's path, body and the ids of the writes it asks for."""
        if kind == "recommendations":
            return "/v1/recommendations", {"user_id": self.rng.choice(self.users), "k": 10}, []
        if kind == "events":
            events = [
                {
                    "user_id": self.rng.choice(self.users),
                    "item_id": self.rng.choice(self.items),
                    "event_id": uuid.uuid4().hex,
                }
                for _ in range(EVENTS_PER_REQUEST)
            ]
            return "/v1/events", {"events": events}, [e["event_id"] for e in events]
        self._new_items += 1
        item = f"chaos{self._new_items:06d}-{uuid.uuid4().hex[:6]}"
        body = {
            "items": [
                {"item_id": item, "title": f"Chaos item {self._new_items}", "category": "chaos"}
            ]
        }
        return "/v1/catalog/items", body, [item]

    def _settle(self, outcome: Outcome, answer: bytes, ids: list[str]) -> None:
        """Record the acknowledged writes (and a recommendation's degradation and model)."""
        acked = self.tally.acked[outcome.kind]
        if outcome.kind == "recommendations" and outcome.status == 200:
            data = json.loads(answer)
            outcome.degraded = bool(data["degraded"])
            outcome.model_version = str(data["model_version"])
            acked[str(data["request_id"])] = outcome.phase
        elif (outcome.kind, outcome.status) in ACKED:
            acked.update(dict.fromkeys(ids, outcome.phase))
