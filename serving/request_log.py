"""Writes the served requests' records off the hot path, in batches.

Requests enqueue their `ServedRequest` rows; a writer thread commits them per tenant in one
transaction per batch (rows and one ledger record that carries the batch's digest, so the
request log is covered by the region's hash chain). `close()` drains the queue before
returning, so a graceful shutdown loses nothing. (Events go to the region's event log.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from collections import defaultdict
from typing import Any

from atlasrec.dataplane.tables import ServedRequest
from atlasrec.platform import Plane
from atlasrec.tenancy import Scope

ACTOR = "serving"
log = logging.getLogger("atlasrec.serving")


class RequestLog:
    """The region's request log: served requests, written in batches."""

    def __init__(self, plane: Plane, *, flush_s: float = 0.5, max_batch: int = 2_000) -> None:
        self.plane = plane
        self.flush_s = flush_s
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[Scope | None, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="serving-request-log", daemon=True)
        self.written_requests = 0
        self.failures = 0
        self._thread.start()

    def served(self, scope: Scope, row: ServedRequest) -> None:
        """Queue one served request's record."""
        self._queue.put((scope, row))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written."""
        marker = threading.Event()
        self._queue.put((None, marker))
        return marker.wait(timeout)

    def close(self) -> None:
        """Write everything still queued, then stop the writer."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[tuple[Scope | None, Any]] = []
            try:
                first = self._queue.get(timeout=self.flush_s)
            except queue.Empty:
                continue
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < self.max_batch:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    stopping = True
                    break
                batch.append(entry)
            self._write(batch)

    def _write(self, batch: list[tuple[Scope | None, Any]]) -> None:
        requests: dict[Scope, list[ServedRequest]] = defaultdict(list)
        markers: list[threading.Event] = []
        for scope, entry in batch:
            if scope is None:
                markers.append(entry)
            else:
                requests[scope].append(entry)
        for scope, rows in requests.items():
            try:
                self._write_tenant(scope, rows)
            except Exception:  # keep serving; the failure is logged and counted
                self.failures += 1
                log.exception("serving records of %s could not be written", scope.tenant_id)
        for marker in markers:
            marker.set()

    def _write_tenant(self, scope: Scope, requests: list[ServedRequest]) -> None:
        with self.plane.session(scope, actor=ACTOR, action="serving.record") as session:
            session.add_all(requests)
            digest = hashlib.sha256(
                json.dumps([[r.request_id, r.model_version, r.items] for r in requests]).encode()
            ).hexdigest()
            details = {
                "count": len(requests),
                "first_request_id": requests[0].request_id,
                "last_request_id": requests[-1].request_id,
                "sha256": digest,
            }
            self._audit(scope, session, "serving.requests", details)
        self.written_requests += len(requests)

    def _audit(self, scope: Scope, session: Any, action: str, details: dict[str, Any]) -> None:
        """A record of what was written, in the same transaction."""
        self.plane.ledger.append(
            actor=ACTOR,
            action=action,
            subject=f"tenant:{scope.tenant_id}",
            tenant_id=scope.tenant_id,
            session=session,
            details=details,
        )
