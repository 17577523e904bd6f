"""A client that posts batches of events with ids and remembers which were acknowledged."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class EventLoad:
    """Posts batches round-robin to `urls` with one API key; counts what came back 202."""

    urls: list[str]
    key: str
    batch: int = 20
    acked: set[str] = field(default_factory=set)
    acked_by: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    sent: int = 0

    def burst(self, seconds: float, fault: Callable[[], None] | None = None) -> None:
        """Post for `seconds` (one client thread per url), applying `fault` halfway through."""
        stop = threading.Event()
        clients = [threading.Thread(target=self._post_until, args=(u, stop)) for u in self.urls]
        for client in clients:
            client.start()
        time.sleep(seconds / 2)
        if fault is not None:
            fault()
        time.sleep(seconds / 2)
        stop.set()
        for client in clients:
            client.join(timeout=30)

    def _post_until(self, url: str, stop: threading.Event) -> None:
        with httpx.Client(timeout=3.0) as http:
            while not stop.is_set():
                ids = [uuid.uuid4().hex for _ in range(self.batch)]
                body = {
                    "events": [
                        {"event_id": i, "user_id": f"u{n % 7}", "item_id": f"i{n % 30}"}
                        for n, i in enumerate(ids)
                    ]
                }
                self.sent += len(ids)
                try:
                    response = http.post(
                        f"{url}/v1/events",
                        json=body,
                        headers={"Authorization": f"Bearer {self.key}"},
                    )
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 202:
                    self.acked.update(ids)
                    self.acked_by[url] += len(ids)
                else:
                    self.refused += len(ids)
                    time.sleep(0.05)


@dataclass
class RecommendationLoad:
    """Asks one url for recommendations with one API key; remembers each answered request id."""

    url: str
    key: str
    answered: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)

    def run(self, stop: threading.Event) -> threading.Thread:
        """Ask in a thread until `stop` is set."""
        thread = threading.Thread(target=self._ask_until, args=(stop,))
        thread.start()
        return thread

    def _ask_until(self, stop: threading.Event) -> None:
        with httpx.Client(timeout=5.0) as http:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    response = http.post(
                        f"{self.url}/v1/recommendations",
                        json={"user_id": f"user-{n % 7}", "k": 3},
                        headers={"Authorization": f"Bearer {self.key}"},
                    )
                except httpx.HTTPError:
                    self.statuses[0] += 1  # no answer (the server is down)
                    time.sleep(0.05)
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    self.answered.add(response.json()["request_id"])
