"""The serving app's ASGI middleware: the request body limit and the request id."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

MAX_BODY_BYTES = 1 << 20

AsgiScope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class HttpMiddleware:
    """A pure ASGI middleware that acts on HTTP requests only (`handle`)."""

    def __init__(self, app: Callable[[AsgiScope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        """Handle HTTP requests; pass anything else (lifespan, websockets) through."""
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        """Process one HTTP request."""
        raise NotImplementedError


class BodyLimit(HttpMiddleware):
    """Refuse request bodies over `MAX_BODY_BYTES` with 413 (declared or streamed)."""

    async def handle(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        """Refuse a declared or streamed body over the limit."""
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            await _too_large(send)
            return
        seen = 0

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send)


class RequestId(HttpMiddleware):
    """Give each request an id (`request.state.request_id`) and the `X-Request-ID` header.

    A route may replace the id (a recommendation's is bound to its tenant); the header
    carries the id the route left.
    """

    async def handle(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        """Stamp the id on the request's state and on its response."""
        state = scope.setdefault("state", {})
        state["request_id"] = uuid.uuid4().hex

        async def with_header(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":  # the id as the route left it
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", str(state["request_id"]).encode()),
                ]
            await send(message)

        await self.app(scope, receive, with_header)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send) -> None:
    body = b'{"detail":"request body over 1 MiB"}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
