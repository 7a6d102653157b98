"""The proxy's fast path (``proxy.fastpath``) in a real uvicorn on uvloop, against a real
upstream on loopback (raw sockets, so that each framing and failure is exactly what the
test says); the ASGI app behind it is what the fast path falls back to."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from support.loopback import LoopbackServer
from virtuai.proxy.fastpath import FastRequest, Switch, fast_protocol
from virtuai.proxy.headers import downstream_headers
from virtuai.proxy.upstream import UpstreamPool

Answer = Callable[[bytes], bytes]


class Upstream(LoopbackServer):
    """A loopback server: each request's answer is ``answers[path]`` (its head's path)."""

    def __init__(self, answers: dict[bytes, Answer]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.sent_at = 0.0  # when the last answer was all sent
        super().__init__(self._answer)

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            self.requests.append(head)
            path = head.split(b" ")[1]
            reply = self.answers[path.split(b"?")[0]](head)
            if not reply:
                return  # closes without answering
            conn.sendall(reply)
            self.sent_at = time.monotonic()
            if b"connection: close" in reply.lower():
                return


def fixed(body: bytes, extra: bytes = b"") -> Answer:
    return lambda _head: (
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b"
        % (
            len(body),
            extra,
            body,
        )
    )


class Front:
    """uvicorn with the fast path in front of an ASGI app that proxies through the same
    pool (so that its connections become the fast path's idle ones)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.pool = UpstreamPool()
        self.asgi = 0
        self.fast = 0
        switch = Switch()
        switch.hook = self._hook
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            loop="uvloop",
            http=fast_protocol(switch),
            lifespan="off",
            interface="asgi3",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def _head(self, scope: dict[str, Any]) -> bytes:
        query = b"?" + scope["query_string"] if scope["query_string"] else b""
        return b"%s %s%s HTTP/1.1\r\nhost: up\r\n\r\n" % (
            scope["method"].encode(),
            scope["raw_path"],
            query,
        )

    def _hook(self, scope: dict[str, Any]) -> FastRequest | None:
        if scope["method"] not in ("GET", "HEAD"):
            return None
        connection = self.pool.take("127.0.0.1", self.upstream.port)
        if connection is None:
            return None
        self.fast += 1
        return FastRequest(connection, self._head(scope), lambda: None, downstream_headers)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.asgi += 1
        response = await self.pool.request(
            "127.0.0.1", self.upstream.port, self._head(scope), head_only=scope["method"] == "HEAD"
        )
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": downstream_headers(response.headers),
            }
        )
        while True:
            chunk, done = await response.next()
            await send({"type": "http.response.body", "body": chunk, "more_body": not done})
            if done:
                break
        response.close()

    def client(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def made() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        thing.stop() if isinstance(thing, Front) else thing.listener.close()


def front(made: list[Any], answers: dict[bytes, Answer]) -> Front:
    upstream = Upstream(answers)
    made.append(upstream)
    proxy = Front(upstream)
    made.append(proxy)
    return proxy


def get(conn: http.client.HTTPConnection, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn.request(method, path)
    response = conn.getresponse()
    return response.status, response.read()


def test_after_the_first_request_the_answers_are_relayed_without_asgi(made: list[Any]) -> None:
    proxy = front(made, {b"/a": fixed(b"hello")})
    conn = proxy.client()
    assert [get(conn, "/a?x=1") for _ in range(5)] == [(200, b"hello")] * 5
    assert (proxy.asgi, proxy.fast) == (1, 4)  # the first one made the pool's connection
    assert proxy.upstream.connections == 1  # kept alive both ways
    assert proxy.upstream.requests[-1].startswith(b"GET /a?x=1 HTTP/1.1")


def test_every_framing_of_an_answer_reaches_the_caller(made: list[Any]) -> None:
    def chunked(_head: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )

    def until_close(_head: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"

    def no_content(_head: bytes) -> bytes:
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    big = bytes(range(256)) * 4096  # 1 MiB: past the sockets' buffers
    proxy = front(
        made,
        {
            b"/a": fixed(b"x"),
            b"/chunked": chunked,
            b"/close": until_close,
            b"/empty": no_content,
            b"/big": fixed(big),
            b"/head": fixed(b"12345"),
        },
    )
    conn = proxy.client()
    get(conn, "/a")  # the pool's first connection
    assert get(conn, "/chunked") == (200, b"abcdefg")
    assert get(conn, "/a") == (200, b"x")
    assert get(conn, "/close") == (200, b"all of it")  # chunked to the caller, kept alive
    assert get(conn, "/a") == (200, b"x")
    assert get(conn, "/empty") == (204, b"")
    get(conn, "/a")
    conn.request("HEAD", "/head")
    head = conn.getresponse()
    assert (head.status, head.getheader("content-length"), head.read()) == (200, "5", b"")
    get(conn, "/a")
    assert get(conn, "/big") == (200, big)
    assert get(conn, "/a") == (200, b"x")  # the caller's connection still in step
    assert proxy.fast >= 6


def test_hop_by_hop_headers_and_the_session_cookie_do_not_come_back(made: list[Any]) -> None:
    extra = b"connection: keep-alive\r\nkeep-alive: timeout=5\r\nset-cookie: virtuai_session=x\r\n"
    extra += b"set-cookie: mine=1\r\nx-kept: yes\r\n"
    proxy = front(made, {b"/a": fixed(b"ok", extra)})
    conn = proxy.client()
    get(conn, "/a")
    conn.request("GET", "/a")
    response = conn.getresponse()
    response.read()
    assert proxy.fast == 1
    headers = [(k.lower(), v) for k, v in response.getheaders()]
    assert ("x-kept", "yes") in headers and ("set-cookie", "mine=1") in headers
    assert not [k for k, v in headers if k in ("keep-alive", "connection") or "virtuai_" in v]


def test_an_upstream_that_closes_without_answering_sends_it_the_asgi_way(
    made: list[Any],
) -> None:
    state = {"calls": 0}

    def flaky(_head: bytes) -> bytes:
        state["calls"] += 1
        if state["calls"] == 2:
            return b""  # the second request: the connection closes, nothing answered
        return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    proxy = front(made, {b"/a": flaky})
    conn = proxy.client()
    assert [get(conn, "/a") for _ in range(3)] == [(200, b"ok")] * 3
    # 1: ASGI (no idle connection); 2: fast, lost, then ASGI on a new connection; 3: fast.
    assert (proxy.asgi, proxy.fast) == (2, 2)
    assert proxy.upstream.connections == 2


def test_pipelined_requests_are_answered_in_order(made: list[Any]) -> None:
    proxy = front(made, {b"/a": fixed(b"first"), b"/b": fixed(b"second")})
    conn = proxy.client()
    get(conn, "/a")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(b"GET /a HTTP/1.1\r\nhost: h\r\n\r\nGET /b HTTP/1.1\r\nhost: h\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"second"):
            chunk = raw.recv(65536)
            assert chunk, data
            data += chunk
    assert data.index(b"first") < data.index(b"second")


def test_a_slow_caller_slows_the_upstream_down(made: list[Any]) -> None:
    """Backpressure: while the caller does not read, the relay stops reading the upstream,
    so a large answer is not piled up in the server's memory."""
    size = 48 * 2**20
    body = b"y" * size
    proxy = front(made, {b"/small": fixed(b"x"), b"/large": fixed(body)})
    conn = proxy.client()
    get(conn, "/small")  # the pool's first connection
    conn.request("GET", "/large")
    response = conn.getresponse()
    time.sleep(1.5)  # the caller does not read: the upstream must be held up
    began_reading = time.monotonic()
    assert response.read() == body
    assert proxy.fast == 1
    assert proxy.upstream.sent_at > began_reading  # its sendall ended once the caller read
