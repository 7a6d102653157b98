"""The proxy's HTTP/1.1 client against real servers on loopback (raw sockets, so that each
framing and each failure is exactly what the test says), on uvloop as in ``virtuai up``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvloop

from support.loopback import Handler
from support.loopback import LoopbackServer as Upstream
from virtuai.proxy.upstream import UpstreamError, UpstreamPool

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    # In a thread of its own: in a full run, Playwright's sync API (tests/e2e/test_web.py)
    # keeps an event loop running in the main thread, where asyncio.run() is refused.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(uvloop.run, main).result(timeout=30)


def read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    """One request's head, and its body when it has a Content-Length or is chunked."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lower = head.lower()
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            more = conn.recv(65536)
            if not more:
                break  # the client gave up
            rest += more
        return head, rest
    if b"transfer-encoding: chunked" in lower:
        while not rest.endswith(b"0\r\n\r\n"):
            rest += conn.recv(65536)
    return head, rest


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), extra, body)


@pytest.fixture
def servers() -> Iterator[list[Upstream]]:
    made: list[Upstream] = []
    yield made
    for server in made:
        server.close()


def serve(servers: list[Upstream], handler: Handler) -> Upstream:
    server = Upstream(handler)
    servers.append(server)
    return server


async def body_of(pool: UpstreamPool, port: int, head: bytes, **kw: Any) -> tuple[int, bytes]:
    response = await pool.request("127.0.0.1", port, head, **kw)
    parts = []
    while True:
        chunk, done = await response.next()
        parts.append(chunk)
        if done:
            break
    response.close()
    return response.status, b"".join(parts)


GET = b"GET /x HTTP/1.1\r\nhost: h\r\n\r\n"


def test_keep_alive_connections_are_reused(servers: list[Upstream]) -> None:
    def handler(conn: socket.socket) -> None:
        while True:
            head, _ = read_request(conn)
            if not head:
                return
            conn.sendall(answer(head.split(b" ")[1]))

    server = serve(servers, handler)

    async def main() -> list[tuple[int, bytes]]:
        pool = UpstreamPool()
        got = [await body_of(pool, server.port, GET) for _ in range(5)]
        await pool.aclose()
        return got

    assert run(main()) == [(200, b"/x")] * 5
    assert server.connections == 1


def test_request_bodies_stream_with_their_length_or_chunked(servers: list[Upstream]) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def handler(conn: socket.socket) -> None:
        while True:
            head, body = read_request(conn)
            if not head:
                return
            seen.append((head, body))
            conn.sendall(answer(b"ok"))

    server = serve(servers, handler)

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"hello ", b"world"):
            await asyncio.sleep(0.01)
            yield part

    async def main() -> None:
        pool = UpstreamPool()
        head = b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 11\r\n\r\n"
        assert await body_of(pool, server.port, head, body=chunks()) == (200, b"ok")
        head = b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
        assert await body_of(pool, server.port, head, body=chunks(), chunked=True) == (200, b"ok")
        await pool.aclose()

    run(main())
    assert seen[0][1] == b"hello world"
    assert seen[1][1] == b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
    assert server.connections == 1  # both on one connection: the first body was complete


def test_answers_stream_in_every_framing(servers: list[Upstream]) -> None:
    """Chunked (as it comes: SSE), until the connection ends, a 100 Continue skipped, and a
    HEAD whose Content-Length has no body behind it."""
    gate = threading.Event()

    def handler(conn: socket.socket) -> None:
        head, _ = read_request(conn)
        path = head.split(b" ")[1]
        if path == b"/sse":
            conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            gate.wait(10)
            conn.sendall(b"6\r\nsecond\r\n0\r\n\r\n")
        elif path == b"/eof":
            conn.sendall(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        elif path == b"/continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"after"))
        else:  # HEAD: the length of what a GET would get, and no body
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
            gate.wait(10)

    server = serve(servers, handler)

    async def main() -> None:
        pool = UpstreamPool()
        response = await pool.request("127.0.0.1", server.port, b"GET /sse HTTP/1.1\r\n\r\n")
        assert await response.next() == (b"first", False)  # before the rest exists
        gate.set()
        assert await response.next() == (b"second", True)
        response.close()
        assert await body_of(pool, server.port, b"GET /eof HTTP/1.1\r\n\r\n") == (
            200,
            b"all of it",
        )
        assert await body_of(pool, server.port, b"GET /continue HTTP/1.1\r\n\r\n") == (
            200,
            b"after",
        )
        head = b"HEAD /head HTTP/1.1\r\n\r\n"
        assert await body_of(pool, server.port, head, head_only=True) == (200, b"")
        await pool.aclose()

    run(main())


def test_a_slow_reader_pauses_the_upstream(servers: list[Upstream]) -> None:
    """Backpressure: with nobody reading, the upstream's writes block well before it has
    sent everything; all of it arrives, intact, once read."""
    sent = [0]
    size = 64 * 2**20

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        block = b"x" * 2**16
        for _ in range(size // len(block)):
            conn.sendall(block)
            sent[0] += len(block)

    server = serve(servers, handler)

    async def main() -> int:
        pool = UpstreamPool()
        response = await pool.request("127.0.0.1", server.port, GET)
        await asyncio.sleep(1)
        assert sent[0] < size // 4  # held back by the socket buffers, not read into memory
        total = 0
        while True:
            chunk, done = await response.next()
            total += len(chunk)
            if done:
                break
        response.close()
        return total

    assert run(main()) == size


def test_failures_say_whether_the_request_was_sent(servers: list[Upstream]) -> None:
    def reset(conn: socket.socket) -> None:
        read_request(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def half(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")

    resetting = serve(servers, reset)
    halving = serve(servers, half)
    closed = socket.create_server(("127.0.0.1", 0))
    refused = closed.getsockname()[1]
    closed.close()

    async def main() -> list[tuple[bool, bool]]:
        pool = UpstreamPool()
        got = []
        with pytest.raises(UpstreamError) as error:
            await pool.request("127.0.0.1", refused, GET)
        got.append((error.value.sent, error.value.answered))
        with pytest.raises(UpstreamError) as error:
            await pool.request("127.0.0.1", resetting.port, GET)
        got.append((error.value.sent, error.value.answered))
        response = await pool.request("127.0.0.1", halving.port, GET)
        assert await response.next() == (b"abc", False)
        with pytest.raises(UpstreamError) as error:
            await response.next()
        got.append((error.value.sent, error.value.answered))
        response.close()
        return got

    assert run(main()) == [(False, False), (True, False), (True, True)]


def test_an_idle_connection_closed_by_the_upstream_is_not_a_failure(
    servers: list[Upstream],
) -> None:
    """The upstream closes each connection after one answer without saying so: the next
    request, on the pooled connection, is sent again on a new one."""

    def handler(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(answer(b"once"))

    server = serve(servers, handler)

    async def main() -> list[tuple[int, bytes]]:
        pool = UpstreamPool()
        return [await body_of(pool, server.port, GET) for _ in range(3)]

    assert run(main()) == [(200, b"once")] * 3
    assert server.connections == 3


def test_a_body_cut_short_by_the_caller_ends_the_exchange(servers: list[Upstream]) -> None:
    """The caller goes away mid-upload: the upstream is not left waiting for the rest."""
    ended = threading.Event()

    def handler(conn: socket.socket) -> None:
        read_request(conn)  # waits for all 100 bytes, or the connection's end
        ended.set()

    server = serve(servers, handler)

    async def gone() -> AsyncIterator[bytes]:
        yield b"x" * 10
        raise ConnectionAbortedError("the caller went away")

    async def main() -> None:
        pool = UpstreamPool()
        head = b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 100\r\n\r\n"
        with pytest.raises(UpstreamError):
            await pool.request("127.0.0.1", server.port, head, body=gone())

    run(main())
    assert ended.wait(5)
