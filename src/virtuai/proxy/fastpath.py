"""The proxy's fast path: a plain proxied request relayed at the protocol level, no ASGI.

``virtuai up`` serves with uvicorn's httptools protocol; :func:`fast_protocol` makes a
subclass of it that, as each request's head has been parsed, asks the proxy
(``ProxyApp.fast``) whether the request can go the fast way: a ``GET``, ``HEAD`` or
``OPTIONS`` without a body, on a keep-alive connection, under ``/user/`` or ``/svc/``,
whose caller and route are both in the proxy's caches, whom the route admits, to a
workload on this machine with an idle keep-alive connection in the upstream pool.
Then the request's head is written on that connection and the answer (:class:`Relay`)
goes straight from the upstream's parser to the caller's socket, its headers filtered
as the ASGI path filters them, its body framed as it came (``Content-Length``) or
chunked.  No task, no ASGI messages, no ``Response`` object, no body copied.

Everything else goes the ASGI way, unchanged (``ProxyApp._http``): WebSockets,
bodies, refusals, cold starts, other machines, a route or caller not cached.  So does
a fast request whose upstream closed the connection before answering anything (an
idle connection it had closed, or a replica that crashed): the request is started
again on the ASGI path, which retries, picks another replica or answers 503, as
always (the methods taken here are idempotent, so a second sending does no harm).

Why (docs/architecture.md, "The hot path"): the proxy shares two cores with the
load, the upstream and the API; on this path a proxied request costs the server
about half the CPU of the ASGI path (docs/benchmarks.md, "The notebook proxy,
fourth round").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from virtuai.domain.http import API_KEEP_ALIVE_S
from virtuai.proxy.upstream import Connection

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class FastRequest:
    """A request the proxy took for the fast path: the upstream connection to send it on,
    its head, what to call as its answer flows (the workload's activity), and the filter
    of the answer's headers (``proxy.headers.downstream_headers``)."""

    connection: Connection
    head: bytes
    touch: Callable[[], None]
    downstream: Callable[[Iterable[tuple[bytes, bytes]]], Headers]


Hook = Callable[[dict[str, Any]], FastRequest | None]


class Switch:
    """Where the protocol finds the proxy's hook: ``None`` until the platform is built
    (the gate serves meanwhile)."""

    hook: Hook | None = None


class Relay:
    """One fast request's answer, from the upstream's parser to the caller's socket
    (an ``upstream.Exchange``)."""

    __slots__ = (
        "_chunked",
        "_connection",
        "_cycle",
        "_framed",
        "_head_only",
        "_headers",
        "_interim",
        "_out",
        "_protocol",
        "_request",
        "_started",
        "answered",
    )

    def __init__(
        self, protocol: FastProtocol, cycle: RequestResponseCycle, request: FastRequest
    ) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self._request = request
        self._connection = request.connection
        self._head_only = cycle.scope["method"] == "HEAD"
        self._headers: Headers = []
        self._framed = False  # the upstream said where its body ends
        self._chunked = False  # the caller gets it chunked
        self._interim = False
        self._started = False  # the answer's head is on its way to the caller
        self._out: list[bytes] = []  # what goes to the caller at the end of this read
        self.answered = False

    def start(self) -> None:
        self._connection.start(self, self._request.head)

    def abort(self) -> None:
        """The caller went away: the upstream connection is not reused."""
        self._connection.finish(reuse=False)

    # -- upstream.Exchange ----------------------------------------------------------------

    def _on_header(self, name: bytes, value: bytes) -> None:
        if not self._framed:
            lower = name.lower()
            self._framed = lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()
            )
        self._headers.append((name, value))

    def _on_head(self, status: int, keep_alive: bool) -> None:
        if 100 <= status < 200:
            self._interim = True  # e.g. 100 Continue: the real answer follows
            self._headers = []
            self._framed = False
            return
        cycle = self._cycle
        content = [STATUS_LINE[status]]
        length = False
        for name, value in cycle.default_headers:
            content += (name, b": ", value, b"\r\n")
        for name, value in self._request.downstream(self._headers):
            if name == b"content-length":
                length = True
            content += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            content.append(b"connection: close\r\n")
        if not length and not self._head_only and status not in (204, 304):
            self._chunked = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        cycle.response_started = True
        self._started = True
        self._out.append(b"".join(content))
        if self._head_only or status in (204, 304):
            self._finish(reuse=False)  # no body follows, whatever the headers say

    def _on_body(self, data: bytes) -> None:
        if not self._started:
            return
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._out.append(data)
        self._request.touch()

    def _on_data_end(self) -> None:
        self._flush()

    def _flush(self) -> None:
        """What came of the answer in this read, in one write: a small answer's head and
        body cost the caller's socket one system call, not two."""
        out = self._out
        if out:
            self._protocol.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _on_complete(self, keep_alive: bool) -> None:
        if self._interim:
            self._interim = False
            return
        self._finish(reuse=keep_alive)

    def _on_lost(self, reason: str) -> None:
        if self._cycle.response_complete:
            return
        if not self._started:
            # Nothing of the answer came (an idle connection the upstream had closed, a
            # replica that crashed): the ASGI path takes the request from the start.
            log.debug("proxy fast path: %s; the request goes the ASGI way", reason)
            self._connection.finish(reuse=False)
            self._protocol.fall_back(self._cycle)
            return
        if not self._framed:
            self._finish(reuse=False)  # a body that ends with the connection
            return
        log.info("proxy: upstream broke off: %s", reason)
        self._flush()
        self._connection.finish(reuse=False)
        self._protocol.relay_done(self._cycle, broken=True)

    def _finish(self, reuse: bool) -> None:
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
        self._flush()
        self._connection.finish(reuse=reuse)
        self._protocol.relay_done(self._cycle, broken=False)

    # -- backpressure: the caller reads slower than the upstream writes -------------------

    def pause(self) -> None:
        self._connection.pause_reading()

    def resume(self) -> None:
        self._connection.resume_reading()


class FastProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the proxy's fast path (the class ``switch`` is
    set by :func:`fast_protocol`)."""

    switch: Switch = Switch()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._relay: Relay | None = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        hook = self.switch.hook
        # ``app is self.app``: not uvicorn's 503 for too many connections.
        if hook is not None and cycle.keep_alive and app is self.app and self._relay is None:
            try:
                request = hook(cycle.scope)  # type: ignore[arg-type]
            except Exception:
                log.exception("proxy fast path: the hook failed; the ASGI path takes it")
                request = None
            if request is not None:
                self._relay = Relay(self, cycle, request)
                self._relay.start()
                return
        super()._start_asgi_task(cycle, app)

    def fall_back(self, cycle: RequestResponseCycle) -> None:
        """The fast request could not be answered here: the ASGI path takes it."""
        self._relay = None
        if cycle.disconnected:
            return
        super()._start_asgi_task(cycle, self.app)

    def relay_done(self, cycle: RequestResponseCycle, *, broken: bool) -> None:
        """The answer has been relayed (or broke off: the caller's connection is closed, as
        the ASGI path does when an answer breaks off)."""
        self._relay = None
        cycle.response_complete = True
        cycle.message_event.set()
        if broken or not cycle.keep_alive:
            self.transport.close()
        if not broken:
            cycle.on_response()

    def connection_lost(self, exc: Exception | None) -> None:
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.abort()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._relay is not None:
            self._relay.pause()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._relay is not None:
            self._relay.resume()


def fast_protocol(switch: Switch) -> type[FastProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``), finding the proxy's hook
    in ``switch``."""
    return type("FastProtocol", (FastProtocol,), {"switch": switch})


def uvicorn_config(
    app: Any, switch: Switch, lifespan: Literal["on", "off"] = "on"
) -> uvicorn.Config:
    """How every process of ``virtuai up`` serves: WebSockets (``vc exec``, notebooks) by
    the ``websockets`` library's sans-I/O protocol; uvloop and httptools (C) rather than
    asyncio's loop and h11 (pure Python), which halves the proxy's per-request cost
    (docs/benchmarks.md, "The notebook proxy"); and httptools' protocol with this fast
    path, which relays plain proxied requests without ASGI once ``switch`` has its hook."""
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",
        loop="uvloop",
        http=fast_protocol(switch),
        lifespan=lifespan,
        timeout_keep_alive=API_KEEP_ALIVE_S,
    )


__all__ = ["FastProtocol", "FastRequest", "Relay", "Switch", "fast_protocol", "uvicorn_config"]
