"""A fake identity provider: key pairs made here, a JWKS file, tokens signed with PyJWT.

Tests reach everything through fixtures (``idp``, ``clock``, the keys), never by
importing this module, so they work under any pytest import mode.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from virtuai.settings import OidcSettings

ISSUER = "https://idp.example.org/realms/virtuai"
AUDIENCE = "virtuai"
NOW = 1_700_000_000.0

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def public_jwk(key: PrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``key`` (what a provider publishes)."""
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    return {**jwk, **extra}


def jwks_bytes(*jwks: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(jwks)}).encode()


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


class FakeIdp:
    """Signs tokens like an OIDC provider and publishes its keys to a JWKS file."""

    DROP: Any = _Drop()  # a claim override that removes the claim
    ISSUER = ISSUER
    AUDIENCE = AUDIENCE
    public_jwk = staticmethod(public_jwk)
    jwks_bytes = staticmethod(jwks_bytes)

    def __init__(self, path: Path, rsa_key: rsa.RSAPrivateKey, clock: FakeClock) -> None:
        self.jwks_path = path
        self.key = rsa_key
        self.kid = "rsa-1"
        self.clock = clock
        self.publish(public_jwk(rsa_key, self.kid))

    def publish(self, *jwks: dict[str, Any]) -> None:
        """Replace the JWKS file atomically, like a deployment tool would."""
        tmp = self.jwks_path.with_suffix(".tmp")
        tmp.write_bytes(jwks_bytes(*jwks))
        os.replace(tmp, self.jwks_path)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "3f1c0c7e-0000-4000-8000-000000000001",
            "preferred_username": "alice",
            "groups": [],
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not self.DROP}

    def token(
        self,
        key: PrivateKey | None = None,
        kid: str | None = "default",
        alg: str = "RS256",
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        hdrs = dict(headers or {})
        if kid == "default":
            kid = self.kid
        if kid is not None:
            hdrs["kid"] = kid
        # PyJWS, not jwt.encode: the payload goes out as given, odd claims included.
        payload = json.dumps(self.claims(**claims)).encode()
        return jwt.PyJWS().encode(payload, key or self.key, algorithm=alg, headers=hdrs)

    def settings(self, **overrides: Any) -> OidcSettings:
        values: dict[str, Any] = {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_file": self.jwks_path,
        }
        values.update(overrides)
        return OidcSettings(**values)


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def idp(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, clock: FakeClock) -> FakeIdp:
    return FakeIdp(tmp_path / "jwks.json", rsa_key, clock)
