"""Logging in with JWTs from an OIDC provider: keys from a JWKS file the test generates."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy.orm import Session, sessionmaker

from support.platform import Platform, driver_settings_for_tests, public_dir, remove_state
from virtuai.settings import OidcSettings

ISSUER = "https://sso.example.test/realms/lab"


@pytest.fixture
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def oidc_platform(
    session_factory: sessionmaker[Session], signing_key: rsa.RSAPrivateKey, tmp_path: Path
) -> Iterator[Platform]:
    jwk = json.loads(RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    settings = OidcSettings(issuer=ISSUER, audience="virtuai", jwks_file=jwks)
    state = public_dir("vai-state-")
    platform = Platform(
        session_factory, state, driver_settings=driver_settings_for_tests(), oidc=settings
    )
    yield platform
    remove_state(state, ["physics"])


def token(key: rsa.RSAPrivateKey, username: str, groups: list[str], **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": "virtuai",
        "iat": now,
        "exp": now + 300,
        "preferred_username": username,
        "groups": groups,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})


def test_groups_in_the_token_are_roles_in_tenants(
    oidc_platform: Platform, signing_key: rsa.RSAPrivateKey
) -> None:
    oidc_platform.tenant("physics")
    member = token(signing_key, "marie", ["virtuai:physics:member", "/unrelated"])
    me = oidc_platform.ok("GET", "/api/v1/whoami", member)
    assert me["name"] == "marie" and me["source"] == "oidc" and not me["is_admin"]
    assert me["tenants"] == [{"tenant": "physics", "role": "member"}]
    job = oidc_platform.submit(member, ["true"])
    assert job["user"] == "marie" and job["tenant"] == "physics"

    # Leaving the group at the provider revokes access at the next request.
    outsider = token(signing_key, "marie", [])
    assert oidc_platform.ok("GET", "/api/v1/whoami", outsider)["tenants"] == []
    assert oidc_platform.call("GET", f"/api/v1/jobs/{job['id']}", outsider).status_code == 404


def test_the_admin_group_makes_administrators(
    oidc_platform: Platform, signing_key: rsa.RSAPrivateKey
) -> None:
    admin = token(signing_key, "root-of-trust", ["virtuai-admins"])
    created = oidc_platform.call("POST", "/api/v1/tenants", admin, json={"name": "physics"})
    assert created.status_code == 201


def test_bad_tokens_are_refused_with_a_reason(
    oidc_platform: Platform, signing_key: rsa.RSAPrivateKey
) -> None:
    expired = token(signing_key, "marie", [], exp=int(time.time()) - 3600)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = token(other_key, "marie", ["virtuai-admins"])
    for credential in (expired, forged, "not-a-jwt"):
        response = oidc_platform.call("GET", "/api/v1/whoami", credential)
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthenticated"
        assert response.json()["message"]
