"""Online features on the serving path: the region's online store, with a local fallback.

Every read and write goes to the online store (Redis in production) first. When it fails,
a circuit breaker keeps further calls from waiting on it for `cooldown_s`, and the request
is served from in-process state: the user's recent items as this process last saw them
(its own events and its last successful reads) and the counts read at load time. The
breaker closes by itself on the first call that succeeds after the cool-down.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TypeVar

from atlasrec.online_store import OnlineStoreUnavailable, ScopedOnlineStore

RECENT_CAP = 200
HISTORY_READ = RECENT_CAP
LOCAL_USERS = 50_000
_T = TypeVar("_T")


class Breaker:
    """Shared by a region's tenants: the online store is one server for all of them."""

    def __init__(self, cooldown_s: float = 1.0) -> None:
        self.cooldown_s = cooldown_s
        self._open_until = 0.0
        self.failures = 0

    def call(self, do: Callable[[], _T]) -> _T:
        """Run `do` unless the breaker is open; a failure opens it."""
        if time.monotonic() < self._open_until:
            raise OnlineStoreUnavailable("online store unavailable (circuit open)")
        try:
            return do()
        except OnlineStoreUnavailable:
            self.failures += 1
            self._open_until = time.monotonic() + self.cooldown_s
            raise

    @property
    def open(self) -> bool:
        """Whether calls are currently short-circuited."""
        return time.monotonic() < self._open_until


class OnlineFeatures:
    """One tenant's online features, with an in-process fallback."""

    def __init__(self, store: ScopedOnlineStore, breaker: Breaker) -> None:
        self.store = store
        self.breaker = breaker
        self._local: OrderedDict[str, list[str]] = OrderedDict()
        self._lock = threading.Lock()
        self._popular: tuple[float, list[tuple[str, float]]] = (0.0, [])

    def _remember(self, user_key: str, recent: list[str]) -> None:
        with self._lock:
            self._local[user_key] = recent[:RECENT_CAP]
            self._local.move_to_end(user_key)
            while len(self._local) > LOCAL_USERS:
                self._local.popitem(last=False)

    def recent(self, user_key: str) -> tuple[list[str], bool]:
        """(the user's recent item ids, most recent first; whether the store answered)."""
        try:
            items = self.breaker.call(lambda: self.store.recent(user_key, HISTORY_READ))
        except OnlineStoreUnavailable:
            with self._lock:
                return list(self._local.get(user_key, []))[:HISTORY_READ], False
        self._remember(user_key, items)
        return items, True

    def item_stats(self, item_ids: Sequence[str]) -> tuple[list[float], list[float | None]] | None:
        """(counts, last-seen times) of items, or None when the store is unreachable."""
        try:
            return self.breaker.call(lambda: self.store.item_stats(item_ids))
        except OnlineStoreUnavailable:
            return None

    def popular(self, n: int, max_age_s: float = 1.0) -> list[tuple[str, float]] | None:
        """The `n` most popular items (cached for `max_age_s`), or None when unreachable."""
        fetched, items = self._popular
        if time.monotonic() - fetched < max_age_s and len(items) >= n:
            return items[:n]
        try:
            items = self.breaker.call(lambda: self.store.top_items(n))
        except OnlineStoreUnavailable:
            return None
        self._popular = (time.monotonic(), items)
        return items

    def record(
        self, events: Sequence[tuple[str, str, float, float]], seqs: Sequence[int], log_id: str
    ) -> bool:
        """Apply logged `(user_key, item_id, weight, ts)` events; False if only locally.

        Each is applied to the store once, by its sequence number in the region's event log:
        the online consumer applying the same events later (or again) changes nothing.
        """
        with self._lock:
            for user_key, item_id, _, _ in events:
                recent = self._local.get(user_key, [])
                self._local[user_key] = [item_id, *recent][:RECENT_CAP]
                self._local.move_to_end(user_key)
        try:
            self.breaker.call(
                lambda: self.store.record_logged(events, seqs, log_id=log_id, cap=RECENT_CAP)
            )
        except OnlineStoreUnavailable:
            return False
        return True


class NoFeatures(OnlineFeatures):
    """No online features at all: fallback serving holds no user data in its region.

    Popularity and item statistics come from the snapshot's counts (the DP release copied
    with the catalog, `atlasrec.fallback`).
    """

    def __init__(self) -> None:  # no store, no breaker: nothing is ever asked
        pass

    def recent(self, user_key: str) -> tuple[list[str], bool]:
        """Nothing is known of any user."""
        return [], True

    def item_stats(self, item_ids: Sequence[str]) -> tuple[list[float], list[float | None]] | None:
        """None: the snapshot's counts stand in."""
        return None

    def popular(self, n: int, max_age_s: float = 1.0) -> list[tuple[str, float]] | None:
        """None: the snapshot's counts stand in."""
        return None

    def record(
        self, events: Sequence[tuple[str, str, float, float]], seqs: Sequence[int], log_id: str
    ) -> bool:
        """Never called: fallback serving takes no events."""
        return False
