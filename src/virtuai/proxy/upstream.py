"""The proxy's HTTP/1.1 client to its upstreams: keep-alive asyncio connections, httptools.

Why not a general client (aiohttp before): the proxy needs one thing, pass a request
whose head it has already built and stream the answer back, and aiohttp's request
machinery (URL, cookie, header and timeout objects per request) was half the
proxy's CPU per request.  Here a request is one ``transport.write`` of a head
built in one pass, and the answer is parsed by httptools (llhttp, in C: what
uvicorn parses requests with) straight into a list of chunks.

* One pool of idle connections per ``(host, port)``, last used first, each kept
  ``idle_s`` (4 s: under uvicorn's 5 s keep-alive, so a service replica rarely
  closes a connection as it is picked) and only if the answer allowed it.
* Bodies stream both ways with backpressure: a request body is written chunk by
  chunk, waiting while the socket's buffer is full (``pause_writing``); an
  answer's body is read until ``_HIGH`` bytes wait for the caller, then reading
  pauses until it takes them.  Request bodies go as they came: with their
  ``Content-Length``, or chunked.
* ``Expect: 100-continue`` is the proxy's server's business (uvicorn answers it
  when the body is first read); an interim 1xx answer from upstream is skipped.
* Failures say how far the request went (:class:`UpstreamError`): not sent at
  all (no connection), or sent but not answered, which the proxy uses to retry
  on another replica.  A request without a body whose reused idle connection
  turns out closed is sent again once on a new one (the upstream closed it while
  it sat in the pool, so it never saw the request).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import Protocol, cast

import httptools

_HIGH = 256 * 1024  # answer bytes waiting for the caller before reading pauses
_MAX_IDLE = 64  # idle connections kept per upstream


class UpstreamError(Exception):
    """The upstream did not answer.  ``sent``: some of the request may have reached it;
    ``answered``: some of its answer came (then nothing may be retried)."""

    def __init__(self, message: str, *, sent: bool, answered: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.answered = answered


class Exchange(Protocol):
    """What a connection hands the answer's parts to: a :class:`Response`, or the fast
    path's relay (``proxy.fastpath``), which writes them straight to the caller."""

    answered: bool

    def _on_header(self, name: bytes, value: bytes) -> None: ...
    def _on_head(self, status: int, keep_alive: bool) -> None: ...
    def _on_body(self, data: bytes) -> None: ...
    def _on_complete(self, keep_alive: bool) -> None: ...
    def _on_lost(self, reason: str) -> None: ...
    def _on_data_end(self) -> None: ...


class Response:
    """An answer being read: its status and headers, then its body chunk by chunk."""

    def __init__(self, connection: Connection, head_only: bool) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._connection = connection
        self._head_only = head_only
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._done = False
        self._keep_alive = False
        self._interim = False
        self._framed = False  # Content-Length or chunked: the body's end is known
        self._error: UpstreamError | None = None
        self._head: asyncio.Future[None] = connection.loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self.answered = False
        self.request_sent = False  # the whole request body was written

    # -- what the proxy calls ---------------------------------------------------------------

    async def next(self) -> tuple[bytes, bool]:
        """What has come of the body since the last call (at least one byte unless it has
        ended), and whether the body is complete."""
        while not self._chunks and not self._done:
            if self._error is not None:
                raise self._error
            self._waiter = self._connection.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        if len(chunks) == 1:
            data = chunks.popleft()
        else:
            data = b"".join(chunks)
            chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._connection.resume_reading()
        return data, self._done

    def close(self) -> None:
        """Done with it: the connection goes back to the pool if the exchange completed
        and both sides allow it, else it is closed."""
        connection = self._connection
        if connection.response is not self:
            return
        connection.response = None
        if self._done and self._keep_alive and self.request_sent and not self._chunks:
            connection.release()
        else:
            connection.close()

    # -- what the connection calls ----------------------------------------------------------

    def _on_header(self, name: bytes, value: bytes) -> None:
        if not self._framed:
            lower = name.lower()
            self._framed = lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()
            )
        self.headers.append((name, value))

    def _on_head(self, status: int, keep_alive: bool) -> None:
        if 100 <= status < 200 and status != 101:
            self._interim = True  # e.g. 100 Continue: the real answer follows
            self.headers = []
            self._framed = False
            return
        self.status = status
        if not self._head.done():
            self._head.set_result(None)
        if self._head_only:  # no body follows, whatever the headers say
            self._finish(keep_alive=False)

    def _on_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH and not self._paused:
            self._paused = True
            self._connection.pause_reading()
        self._wake()

    def _on_complete(self, keep_alive: bool) -> None:
        if self._interim:
            self._interim = False
            return
        self._finish(keep_alive)

    def _finish(self, keep_alive: bool) -> None:
        if not self._done:
            self._done = True
            self._keep_alive = keep_alive
            self._wake()

    def _on_lost(self, reason: str) -> None:
        if self._done:
            return
        if self._head.done() and not self._framed and not self._head_only:
            self._finish(keep_alive=False)  # a body that ends with the connection
            return
        error = UpstreamError(reason, sent=True, answered=self.answered)
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: nobody may be waiting any more
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_data_end(self) -> None:
        pass  # the caller takes what came when it is woken


class Connection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, key: tuple[str, int], loop: asyncio.AbstractEventLoop):
        self.pool = pool
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Exchange | None = None
        self.closed = False
        self.idle_since = 0.0
        self._drained: asyncio.Future[None] | None = None
        self._writing_paused = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            self.close()  # nothing was asked: a confused upstream
            return
        response.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # 101: never asked for here (WebSockets go their own way)
        except httptools.HttpParserError as error:
            response._on_lost(f"bad answer: {error}")
            self.close()
            return
        if self.response is response:
            response._on_data_end()  # all of this read is parsed: one write of it onwards

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None:
            self.response._on_lost(f"connection lost: {exc or 'closed by the upstream'}")
        else:
            self.pool._discard(self)  # idle: the upstream closed it, or went away
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response._on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response._on_head(self.parser.get_status_code(), self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._on_body(body)

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response._on_complete(self.parser.should_keep_alive())

    # -- ours --------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise UpstreamError("connection closed", sent=False)
        self.transport.write(data)

    async def drain(self) -> None:
        while self._writing_paused and not self.closed:
            self._drained = self.loop.create_future()
            await self._drained
        if self.closed:
            raise UpstreamError("connection lost while sending", sent=True)

    def _wake_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def release(self) -> None:
        self.pool._release(self)

    def start(self, exchange: Exchange, head: bytes) -> None:
        """Send a request without a body, its answer to go to ``exchange`` (the fast path;
        a connection taken from the pool by ``UpstreamPool.take``)."""
        self.response = exchange
        self.write(head)

    def finish(self, reuse: bool) -> None:
        """Done with the exchange: back to the pool (``reuse``), else closed."""
        self.response = None
        if reuse:
            self.release()
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to upstreams (event loop only: no locks)."""

    def __init__(self, *, connect_timeout_s: float = 10.0, idle_s: float = 4.0) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._idle_s = idle_s
        self._idle: dict[tuple[str, int], list[Connection]] = {}

    async def request(
        self,
        host: str,
        port: int,
        head: bytes,
        body: AsyncIterator[bytes] | None = None,
        *,
        chunked: bool = False,
        head_only: bool = False,
    ) -> Response:
        """Send ``head`` (the request line and headers, ending with the blank line) and
        ``body`` (``chunked``: encode it so), and return the answer once its head came."""
        key = (host, port)
        connection = self._take(key)
        if connection is not None and body is None:
            try:
                return await self._exchange(connection, head, None, chunked, head_only)
            except UpstreamError as error:
                if error.answered:
                    raise
                # An idle connection the upstream had closed: it never saw the request.
            connection = None
        if connection is None:
            connection = await self._connect(key)
        return await self._exchange(connection, head, body, chunked, head_only)

    def take(self, host: str, port: int) -> Connection | None:
        """An idle keep-alive connection to ``host:port``, if there is one (no I/O)."""
        return self._take((host, port))

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def _exchange(
        self,
        connection: Connection,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        chunked: bool,
        head_only: bool,
    ) -> Response:
        response = Response(connection, head_only)
        connection.response = response
        connection.write(head)
        sender: asyncio.Future[None] | None = None
        if body is None:
            response.request_sent = True
        else:
            sender = asyncio.ensure_future(_send_body(connection, response, body, chunked))
        try:
            await response._head
        except BaseException:
            if sender is not None:
                sender.cancel()
            connection.response = None
            connection.close()
            raise
        return response

    def _take(self, key: tuple[str, int]) -> Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest = time.monotonic() - self._idle_s
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.idle_since > oldest:
                return connection
            connection.close()
        del self._idle[key]  # replicas come and go on new ports: no empty lists kept
        return None

    def _release(self, connection: Connection) -> None:
        if connection.closed:
            return
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= _MAX_IDLE:
            idle.pop(0).close()
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _discard(self, connection: Connection) -> None:
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)
            if not idle:
                del self._idle[connection.key]

    async def _connect(self, key: tuple[str, int]) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _transport, connection = await loop.create_connection(
                    lambda: Connection(self, key, loop), key[0], key[1]
                )
        except (OSError, TimeoutError) as error:
            raise UpstreamError(
                f"cannot connect to {key[0]}:{key[1]}: {error}", sent=False
            ) from None
        return connection


async def _send_body(
    connection: Connection, response: Response, body: AsyncIterator[bytes], chunked: bool
) -> None:
    """Write the request body as it comes from the caller, at the pace the upstream reads."""
    try:
        async for chunk in body:
            if response._done:
                return  # answered already (e.g. 413): the rest is not wanted
            if chunked:
                connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                connection.write(chunk)
            await connection.drain()
        if chunked:
            connection.write(b"0\r\n\r\n")
        response.request_sent = True
    except UpstreamError:
        pass  # the connection is gone: the answer's reader says so
    except Exception:
        # The caller went away mid-body (or its body broke): the upstream must not wait
        # for the rest; the answer's reader learns it from the connection's end.
        connection.close()
