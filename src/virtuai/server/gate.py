"""The ASGI application that ``virtuai up`` serves from its first moment, before the platform
behind it is built.

The server's modules (FastAPI, the API's routers, SQLAlchemy's ORM, the drivers, the
proxy) take one to several seconds to import on a loaded 2-core machine, and a restart
after ``kill -9`` should answer ``/healthz`` in well under a second.  So the listening
socket is served at once by this gate, while another thread builds the platform:

- ``GET /healthz`` is liveness and database reachability, as always.  While the platform
  is being built it answers from ``early_health`` (a read of the existing SQLite file,
  standard library only) with ``{"status": "starting"}``; without one (a first start,
  whose administrator and CLI config are not written yet, or a database server) it waits
  like any other request.
- ``GET /readyz`` answers 503 until the platform is up, then as ``/healthz`` does: what a
  client that must use the API at once waits for.
- Every other request waits until the platform is up (at most ``wait_s``, then 503 with
  ``Retry-After``), then goes to it unchanged: nothing is refused for being early.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_POLL_S = 0.01


class Gate:
    def __init__(
        self,
        early_health: Callable[[], bool] | None = None,
        wait_s: float = 120.0,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self._early_health = early_health
        # Called at the server's start-up (lifespan), just before it serves: the platform's
        # build starts then, so that its imports do not slow the gate's own start.
        self._on_start = on_start
        self._wait_s = wait_s
        self.app: App | None = None  # set, once, by the thread that builds the platform
        self.failed = False  # the platform could not be built: the server is going down

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send, self._on_start)
            return
        path = scope.get("path", "")
        if kind == "http" and path == "/readyz":
            if self.app is None:
                await _json(send, 503, {"status": "failed" if self.failed else "starting"})
                return
            scope = {**scope, "path": "/healthz", "raw_path": b"/healthz"}
        elif (
            kind == "http"
            and path == "/healthz"
            and self.app is None
            and self._early_health is not None
            and not self.failed
        ):
            healthy = await asyncio.to_thread(self._early_health)
            await _json(send, 200 if healthy else 503, {"status": "starting"})
            return
        app = self.app or await self._wait()
        if app is None:
            if kind == "http":
                await _json(send, 503, {"detail": "the server is starting"}, retry_after=True)
            return  # a websocket that is not accepted is closed by the server
        await app(scope, receive, send)

    async def _wait(self) -> App | None:
        deadline = time.monotonic() + self._wait_s
        while self.app is None and not self.failed and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
        return self.app


def sqlite_health(database_url: str) -> Callable[[], bool] | None:
    """A read of an SQLite database that exists already; ``None`` otherwise."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        return None
    path = Path(database_url[len(prefix) :].split("?", 1)[0])
    if not path.name or path.name == ":memory:" or not path.is_file():
        return None

    def check() -> bool:
        try:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error:
            return False
        try:
            # Reads the file's first page: a file that is not a database fails here.
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return True
        except sqlite3.Error:
            return False
        finally:
            connection.close()

    return check


async def _lifespan(receive: Receive, send: Send, on_start: Callable[[], None] | None) -> None:
    # The platform's application has no start-up or shut-down handlers of its own: the
    # composition root starts and stops everything.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_start is not None:
                on_start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _json(send: Send, status: int, body: object, *, retry_after: bool = False) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
