"""OidcVerifier with keys fetched from a URL (an in-memory httpx transport)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from virtuai.auth import OidcVerifier
from virtuai.errors import Unauthenticated

URL = "https://idp.example.org/realms/virtuai/protocol/openid-connect/certs"


class Endpoint:
    """A JWKS endpoint whose answer the test controls; counts requests."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status = 200
        self.down = False
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        assert str(request.url) == URL
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(self.status, content=self.body)


@pytest.fixture
def endpoint(idp: Any) -> Endpoint:
    return Endpoint(idp.jwks_bytes(idp.public_jwk(idp.key, idp.kid)))


def url_verifier(idp: Any, endpoint: Endpoint, **kwargs: Any) -> OidcVerifier:
    client = httpx.Client(transport=httpx.MockTransport(endpoint))
    settings = idp.settings(jwks_file=None, jwks_url=URL)
    return OidcVerifier(settings, clock=idp.clock, http_client=client, **kwargs)


def test_keys_fetched_lazily_and_cached(idp: Any, endpoint: Endpoint) -> None:
    v = url_verifier(idp, endpoint)
    assert endpoint.requests == 0  # construction does no I/O
    for _ in range(5):
        assert v.verify(idp.token()).username == "alice"
    assert endpoint.requests == 1


def test_keys_refetched_after_ttl(idp: Any, endpoint: Endpoint) -> None:
    v = url_verifier(idp, endpoint, jwks_ttl_s=300)
    v.verify(idp.token())
    idp.clock.advance(299)
    v.verify(idp.token())
    assert endpoint.requests == 1
    idp.clock.advance(2)
    v.verify(idp.token())
    assert endpoint.requests == 2


def test_rotation_by_unknown_kid(idp: Any, endpoint: Endpoint, other_rsa_key: Any) -> None:
    v = url_verifier(idp, endpoint, jwks_min_refetch_s=10)
    v.verify(idp.token())
    endpoint.body = idp.jwks_bytes(
        idp.public_jwk(idp.key, "rsa-1"), idp.public_jwk(other_rsa_key, "rsa-2")
    )
    new = idp.token(key=other_rsa_key, kid="rsa-2")
    idp.clock.advance(11)
    assert v.verify(new).username == "alice"  # one refetch, then accepted
    assert endpoint.requests == 2
    assert v.verify(new)
    assert endpoint.requests == 2


def test_unknown_kids_cannot_hammer_the_provider(
    idp: Any, endpoint: Endpoint, other_rsa_key: Any
) -> None:
    v = url_verifier(idp, endpoint, jwks_min_refetch_s=10)
    v.verify(idp.token())
    for i in range(20):
        with pytest.raises(Unauthenticated, match="unknown key id"):
            v.verify(idp.token(key=other_rsa_key, kid=f"made-up-{i}"))
        idp.clock.advance(1)
    # 20 s of made-up kids: at most one refetch per 10 s.
    assert endpoint.requests <= 3
    assert v.verify(idp.token())


def test_unreachable(idp: Any, endpoint: Endpoint) -> None:
    endpoint.down = True
    v = url_verifier(idp, endpoint, jwks_min_refetch_s=10)
    with pytest.raises(Unauthenticated, match=r"^cannot fetch the identity provider's keys$") as e:
        v.verify(idp.token())
    assert e.value.__cause__ is None
    # Failing fast while the provider is down: no new attempt for 10 s.
    with pytest.raises(Unauthenticated, match="cannot fetch"):
        v.verify(idp.token())
    assert endpoint.requests == 1
    endpoint.down = False
    idp.clock.advance(10)
    assert v.verify(idp.token())
    assert endpoint.requests == 2


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, b"oops"), (404, b""), (302, b""), (200, b"<html>"), (200, b'{"keys": 1}')],
)
def test_bad_answers(idp: Any, endpoint: Endpoint, status: int, body: bytes) -> None:
    endpoint.status, endpoint.body = status, body
    with pytest.raises(Unauthenticated, match="cannot fetch"):
        url_verifier(idp, endpoint).verify(idp.token())


def test_oversized_answer(idp: Any, endpoint: Endpoint) -> None:
    endpoint.body = b'{"keys": [' + b" " * (2 * 1024 * 1024) + b"]}"
    with pytest.raises(Unauthenticated, match="cannot fetch"):
        url_verifier(idp, endpoint).verify(idp.token())


def test_stale_keys_serve_through_a_short_outage(idp: Any, endpoint: Endpoint) -> None:
    v = url_verifier(idp, endpoint, jwks_ttl_s=300, jwks_max_stale_s=3600)
    v.verify(idp.token())
    endpoint.down = True
    idp.clock.advance(301)
    assert v.verify(idp.token()).username == "alice"  # fetch failed; last keys still good
    idp.clock.advance(3600)
    with pytest.raises(Unauthenticated, match="cannot fetch"):
        v.verify(idp.token())
