"""The ASGI layer in front of the app: every request body is bounded, and taken as JSON.

`RequestBody` reads a request's whole body before the app sees it, counting its bytes as they
come: a body over the limit gets a 413 in OpenAI's error format at once, whether it declares its
length or comes in chunks without one (refused as soon as the count passes the limit). So no
request can make the server hold or parse more than the limit. Before it answers, the rest of
such a body is read and dropped (up to DRAIN_BYTES, for DRAIN_S seconds at most), so that a
client that sends all of its body before it reads the answer gets the 413 rather than a reset
connection. A POST body is JSON whatever its Content-Type says (as vLLM does): `curl -d` sends
`application/x-www-form-urlencoded`, and a missing or `text/plain` type would otherwise not be
parsed at all. The body is kept in the scope (`errors.BODY_KEY`) for error messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from seallm.server.errors import BODY_KEY, APIError

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]

JSON_METHODS = {"POST", "PUT", "PATCH"}
DRAIN_BYTES = 64 * 2**20  # the most of a refused body read (and dropped) before the 413
DRAIN_S = 5.0


class RequestBody:
    def __init__(
        self,
        app: Any,
        max_bytes: int,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused or (lambda: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        declared = _header(headers, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= DRAIN_BYTES:
                await _drain(receive, DRAIN_BYTES)
            await self._refuse(scope, receive, send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before it sent its body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await _drain(receive, DRAIN_BYTES - size)
                await self._refuse(scope, receive, send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        scope = dict(scope)
        scope[BODY_KEY] = body
        if scope.get("method") in JSON_METHODS:
            scope["headers"] = [(k, v) for k, v in headers if k != b"content-type"]
            scope["headers"].append((b"content-type", b"application/json"))
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the disconnect, when the client goes

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int | None) -> None:
        self.on_refused()
        limit = f"{self.max_bytes / 2**20:g} MiB ({self.max_bytes} bytes)"
        got = f"{size} bytes" if size is not None else "more than that"
        err = APIError(
            413,
            f"The request body is larger than this server's limit of {limit}: got {got} "
            "(server.max_body_mb sets the limit)",
            code="request_too_large",
            headers={"Connection": "close"},  # the rest of the body is not read
        )
        await err.response()(scope, receive, send)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a body: up to `budget` bytes, for DRAIN_S seconds at most."""
    try:
        async with asyncio.timeout(DRAIN_S):
            while budget > 0:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                budget -= len(message.get("body", b""))
    except TimeoutError:
        pass


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None
