"""Batched pulls from a durable JetStream consumer, without a task per message.

nats-py's `PullSubscription.fetch` waits for each message with its own task and timer
(`next_msg`), which costs more than everything else a consumer does per event. `Puller`
speaks the same pull protocol (ADR-13) through the client's public calls instead: a pull
request to `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` answered on this process's inbox,
each request on its own reply subject, so a late closing status of an earlier request is
never taken for the current one's. Messages are buffered as they arrive and handed out in
batches; what a fetch leaves is handed out by the next one.

A message's place in the stream and its delivery count come from its reply subject
(`$JS.ACK...`, both token layouts). Acks, naks and terms are that subject's protocol
bodies, flushed once per batch.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

_V1_TOKENS = 9
"""`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>` (v2 adds domain and
account hash after `ACK`, and a random token at the end)."""
ANSWER_GRACE_S = 5.0
"""How long past its own expiry a request may go unanswered before the server counts as gone."""
_DONE = frozenset({"404", "408", "409"})
"""Statuses that close a pull request: no messages, expired, or refused (conflict)."""


def position(reply: str) -> tuple[int, int]:
    """`(stream sequence, delivery count)` of a consumer's message, from its reply subject."""
    tokens = reply.split(".")
    shift = 2 if len(tokens) == _V1_TOKENS else 0
    return int(tokens[Msg.Ack.StreamSeq - shift]), int(tokens[Msg.Ack.NumDelivered - shift])


class Puller:
    """Pull requests of one process to one durable consumer (runs on the client's loop)."""

    def __init__(self, nc: NATS, stream: str, consumer: str) -> None:
        self._nc = nc
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._buffer: deque[Msg] = deque()
        self._current = ""
        self._wanted = 0
        self._answered = asyncio.Event()
        self._requests = 0
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Listen on this process's inbox (every request's reply subject is under it)."""
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply.startswith("$JS.ACK."):
            self._buffer.append(msg)
            if self._current:  # a message's subject is its own, not the request's reply
                self._wanted -= 1
                if self._wanted <= 0:
                    self._answered.set()
        elif msg.subject == self._current and (msg.headers or {}).get("Status") in _DONE:
            self._answered.set()

    async def fetch(self, max_n: int, wait_s: float) -> list[Msg]:
        """Up to `max_n` messages: those buffered or available now, else those within `wait_s`.

        A request waiting for messages is answered by its first one (those it brings later
        are buffered for the next fetch), so a quiet log's event is handed over at once.
        """
        if len(self._buffer) < max_n:
            await self._request(max_n - len(self._buffer), None)
        if not self._buffer and wait_s > 0:
            await self._request(max_n, wait_s)
        n = min(max_n, len(self._buffer))
        return [self._buffer.popleft() for _ in range(n)]

    async def _request(self, batch: int, wait_s: float | None) -> None:
        """One pull request, awaited until it is full or closed by the server."""
        self._requests += 1
        self._current = f"{self._inbox}.{self._requests}"
        self._wanted = batch if wait_s is None else 1
        self._answered.clear()
        body: dict[str, object] = {"batch": batch}
        if wait_s is None:
            body["no_wait"] = True
        else:
            body["expires"] = int(wait_s * 1e9)
        await self._nc.publish(self._api, json.dumps(body).encode(), reply=self._current)
        try:
            await asyncio.wait_for(self._answered.wait(), (wait_s or 0.0) + ANSWER_GRACE_S)
        finally:
            self._current = ""

    async def settle(self, replies: list[str], body: bytes, flush_s: float) -> None:
        """Send `body` (`+ACK`, `-NAK`, `+TERM`) for each message; flushed before returning."""
        for reply in replies:
            await self._nc.publish(reply, body)
        await self._nc.flush(timeout=max(1, int(flush_s)))

    async def stop(self) -> list[str]:
        """Stop listening; the replies of messages received and never handed out."""
        if self._sub is not None:
            await self._sub.unsubscribe()
        left = [m.reply for m in self._buffer]
        self._buffer.clear()
        return left
