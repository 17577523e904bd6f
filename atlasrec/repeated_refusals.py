"""Repeated boundary refusals of one key, aggregated: one ledger record per key per window.

A client that keeps retrying with a key this region refuses (an API key of a tenant homed
in another region) would add one ledger record per request, without limit. Here the first
refusal of a key in a window is recorded at once, as every refusal is. The repeats within
the next `window_s` seconds are counted, and recorded as one more refusal record naming
the same tenant, actor and key, with how many attempts it stands for (`repeats`) and when
the first and last of them came. Windows close at the key's next refusal after them, at
each sweep (a thread, every `window_s`), and at `close()`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import NoReturn

from atlasrec.boundary import Boundary
from atlasrec.clock import utcnow
from atlasrec.tenancy import Scope

log = logging.getLogger("atlasrec.boundary")


@dataclass
class _Window:
    """The refusals of one key since its last record."""

    scope: Scope
    error: Exception
    actor: str
    action: str
    opened: float
    repeats: int = 0
    first_at: str = ""
    last_at: str = ""


class RepeatedRefusals:
    """Admits through a region's boundary; a key's repeated refusals make one record per window."""

    MAX_KEYS = 10_000

    def __init__(self, boundary: Boundary, window_s: float = 60.0, *, sweep: bool = True) -> None:
        self.boundary = boundary
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if sweep:
            self._thread = threading.Thread(target=self._sweeper, name="refusals", daemon=True)
            self._thread.start()

    def admit(self, key: str, scope: Scope, *, actor: str, action: str) -> None:
        """`Boundary.admit`, with the refusals of `key` aggregated per window."""
        error = self.boundary.check(scope, action=action)
        if error is not None:
            self.refuse(key, scope, error, actor=actor, action=action)

    def refuse(
        self, key: str, scope: Scope, error: Exception, *, actor: str, action: str
    ) -> NoReturn:
        """Record the refusal (the first in the key's window) or count it; raise `error`."""
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.opened < self.window_s:
                stamp = utcnow().isoformat()
                window.first_at = window.first_at or stamp
                window.last_at = stamp
                window.repeats += 1
                raise error
            closed = [(key, window)] if window is not None else []
            if len(self._windows) >= self.MAX_KEYS:
                closed += self._windows.items()
                self._windows.clear()
            self._windows[key] = _Window(scope, error, actor, action, now)
        self._record(closed)
        self.boundary.refuse(scope, error, actor=actor, action=action, key=key)
        raise error  # pragma: no cover (refuse raises)

    def sweep(self, *, everything: bool = False) -> None:
        """Record the repeats of every window that has closed (`everything`: of all)."""
        now = time.monotonic()
        with self._lock:
            closed = [
                (k, w)
                for k, w in self._windows.items()
                if everything or now - w.opened >= self.window_s
            ]
            for key, _ in closed:
                del self._windows[key]
        self._record(closed)

    def close(self) -> None:
        """Stop sweeping and record every window's repeats."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sweep(everything=True)

    def _record(self, closed: list[tuple[str, _Window]]) -> None:
        for key, w in closed:
            if w.repeats == 0:
                continue
            try:
                self.boundary.record(
                    w.scope,
                    w.error,
                    actor=w.actor,
                    action=w.action,
                    key=key,
                    repeats=w.repeats,
                    first_at=w.first_at,
                    last_at=w.last_at,
                )
            except Exception:  # the ledger is unreachable: keep the count for the next sweep
                log.exception("could not record %d repeated refusals of key %s", w.repeats, key)
                self._keep(key, w)

    def _keep(self, key: str, window: _Window) -> None:
        """Put a window's unrecorded repeats back (into the key's open window, if any)."""
        with self._lock:
            open_ = self._windows.get(key)
            if open_ is None:
                self._windows[key] = window
                return
            open_.repeats += window.repeats
            open_.first_at = min(filter(None, (open_.first_at, window.first_at)))
            open_.last_at = max(open_.last_at, window.last_at)

    def _sweeper(self) -> None:
        while not self._stop.wait(self.window_s):
            self.sweep()
