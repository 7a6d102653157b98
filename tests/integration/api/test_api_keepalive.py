"""A 500 never poisons a keep-alive connection: the next request on it is answered.

Against a real uvicorn server on 127.0.0.1, with one persistent connection.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from support.platform import Platform
from support.server import serving
from virtuai.api.app import create_app


@pytest.fixture
def server(platform: Platform) -> Iterator[str]:
    app: FastAPI = create_app(platform.context)

    @app.get("/api/v1/test-boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with serving(app) as address:
        yield address


def _exchange(conn: socket.socket, path: str) -> bytes:
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(headers[b"content-length"])
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head.split(b"\r\n")[0] + b" " + body


def test_the_connection_survives_a_500(server: str) -> None:
    host, port = server.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        first = _exchange(conn, "/api/v1/test-boom")
        assert first.startswith(b"HTTP/1.1 500") and b'"internal"' in first
        for _ in range(3):  # the same socket answers again, and again
            assert _exchange(conn, "/healthz").startswith(b"HTTP/1.1 200")
            assert _exchange(conn, "/api/v1/test-boom").startswith(b"HTTP/1.1 500")


def test_a_persistent_client_sees_no_reset(server: str) -> None:
    with httpx.Client(base_url=f"http://{server}", timeout=10) as client:
        seen = set()
        for _ in range(5):
            response = client.get("/api/v1/test-boom")
            assert response.status_code == 500
            assert response.json()["code"] == "internal"
            seen.add(id(response.extensions["network_stream"]))
            assert client.get("/healthz").status_code == 200
        assert len(seen) == 1  # one connection for all of them: never closed by the server
