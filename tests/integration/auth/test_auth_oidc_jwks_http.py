"""OidcVerifier against a real JWKS endpoint: an HTTP server on 127.0.0.1 in a thread."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from virtuai.auth import OidcVerifier
from virtuai.domain.tenancy import Role
from virtuai.errors import Unauthenticated
from virtuai.settings import OidcSettings

ISSUER = "https://idp.example.org/realms/virtuai"


class JwksServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        self.delay_s = 0.0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/certs"

    def publish(self, *keys: tuple[str, rsa.RSAPrivateKey]) -> None:
        self.keys = [
            {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig"}
            for kid, key in keys
        ]


class _Handler(BaseHTTPRequestHandler):
    server: JwksServer

    def do_GET(self) -> None:
        self.server.requests += 1
        time.sleep(self.server.delay_s)
        body = json.dumps({"keys": self.server.keys}).encode()
        self.send_response(200 if self.path == "/certs" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture
def server() -> Iterator[JwksServer]:
    srv = JwksServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def token(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": "virtuai",
        "preferred_username": "alice",
        "groups": ["/virtuai:physics:owner", "/virtuai-admins"],
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def make_verifier(url: str, **kwargs: Any) -> OidcVerifier:
    settings = OidcSettings(issuer=ISSUER, audience="virtuai", jwks_url=url)
    return OidcVerifier(settings, **kwargs)


def test_verify_with_keys_from_url(server: JwksServer, keys: Any) -> None:
    server.publish(("k1", keys[0]))
    v = make_verifier(server.url)
    try:
        ident = v.verify(token(keys[0], "k1"))
        assert ident.username == "alice"
        assert ident.is_admin
        assert ident.tenant_roles == {"physics": Role.OWNER}
        v.verify(token(keys[0], "k1"))
        assert server.requests == 1  # cached
    finally:
        v.close()


def test_rotation_by_unknown_kid(server: JwksServer, keys: Any) -> None:
    server.publish(("k1", keys[0]))
    v = make_verifier(server.url, jwks_min_refetch_s=0)
    try:
        assert v.verify(token(keys[0], "k1"))
        server.publish(("k2", keys[1]))  # the provider rotates
        assert v.verify(token(keys[1], "k2")).username == "alice"
        assert server.requests == 2
        with pytest.raises(Unauthenticated, match=r"unknown key id.*'k1'"):
            v.verify(token(keys[0], "k1"))  # the retired key is gone
    finally:
        v.close()


def test_unreachable_url(keys: Any) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    v = make_verifier(f"http://127.0.0.1:{port}/certs", fetch_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(Unauthenticated, match="cannot fetch the identity provider's keys"):
        v.verify(token(keys[0], "k1"))
    assert time.monotonic() - started < 5
    v.close()


def test_slow_provider_times_out(server: JwksServer, keys: Any) -> None:
    server.publish(("k1", keys[0]))
    server.delay_s = 2.0
    v = make_verifier(server.url, fetch_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(Unauthenticated, match="cannot fetch the identity provider's keys"):
        v.verify(token(keys[0], "k1"))
    assert time.monotonic() - started < 1.5
    v.close()
