"""ASGI middleware around the whole app: request limits, and errors kept from the server.

Request limits apply before anything else: body size, and NUL bytes in the URL.

A pure ASGI middleware, outermost, so a request that is too large is refused
before the bearer token is checked and before a byte of JSON is parsed: an
anonymous client cannot make the server buffer a gigabyte.  ``Content-Length``
is checked first (413 at once, nothing read); a body without a length (chunked)
is read up to the limit before the application runs, and refused past it.
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtuai.services.metrics import Metrics

DEFAULT_MAX_BODY_BYTES = 1024 * 1024

log = logging.getLogger(__name__)


def _error(code: str, message: str, field: str | None) -> bytes:
    return json.dumps({"code": code, "message": message, "field": field}).encode()


class RequestLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if b"\x00" in unquote_to_bytes(raw_path) or b"%00" in scope.get("query_string", b""):
            # PostgreSQL cannot store NUL in text, and no name or path contains one.
            await self._refuse(send, 422, "invalid", "the URL must not contain NUL bytes", None)
            return
        limit = self.max_body_bytes
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                await self._too_large(send)
                return
            await self.app(scope, receive, send)  # the server never reads past Content-Length
            return
        # No length (chunked): read at most the limit before the app sees anything, then replay.
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await self._refuse(
            send,
            413,
            "too_large",
            f"the request body is larger than the server's limit of {self.max_body_bytes} bytes",
            "body",
        )

    @staticmethod
    async def _refuse(
        send: Send, status: int, code: str, message: str, field: str | None, close: bool = True
    ) -> None:
        body = _error(code, message, field)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if close:  # the unread rest of the body would be taken for the next request
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class ContainErrors:
    """Never let an exception leave the application once its response is sent.

    Starlette's error middleware answers an unexpected exception with our 500
    and then re-raises it; uvicorn, seeing an exception after the response,
    closes the connection, so the client's next request on that keep-alive
    connection is reset.  The error was logged and answered: swallow it here.
    Before any response, answer the 500 ourselves for the same reason.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "done": False}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state["done"] = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if state["done"]:
                return  # answered (500) and logged by the app's handler
            if state["started"]:
                raise  # a streamed response broke halfway: only closing can tell the client
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            await RequestLimits._refuse(
                send,
                500,
                "internal",
                "internal error; the server log has the details",
                None,
                close=False,
            )


class MeasureRequests:
    """API latency and errors by route template (``/api/v1/jobs/{job_id}``), never by raw
    path: one time series per route, whatever ids clients send."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(
                str(scope.get("method", "")), route, status, time.perf_counter() - started
            )
