"""Browser sessions: the cookie, its CSRF guard, sign-out, and OIDC code + PKCE sign-in.

The identity provider is the one thing that cannot run here (no Keycloak in Debian or
PyPI): it is a declared stand-in, an ``httpx.MockTransport`` answering discovery and
the token endpoint the way RFC 6749/7636 and OpenID Connect Core say, signing ID tokens
with a key whose JWKS the server reads from a file.  Everything on virtuai's side is real.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy.orm import Session, sessionmaker

from support.platform import Platform, driver_settings_for_tests, public_dir, remove_state
from virtuai.api.browser import CSRF_HEADER
from virtuai.auth.identity import Identity
from virtuai.auth.oidc_login import OidcLogin
from virtuai.auth.sessions import sign_session
from virtuai.domain.http import SESSION_COOKIE
from virtuai.settings import OidcSettings

ISSUER = "https://sso.example.test/realms/lab"
CLIENT = "virtuai-web"
CSRF = {CSRF_HEADER: "1"}


@pytest.fixture
def platform(session_factory: sessionmaker[Session]) -> Iterator[Platform]:
    state = public_dir("vai-state-")
    platform = Platform(session_factory, state, driver_settings=driver_settings_for_tests())
    yield platform
    remove_state(state, ["physics"])


def sign_in(platform: Platform, token: str) -> httpx.Response:
    response: httpx.Response = platform.http.post(
        "/api/v1/session", json={"token": token}, headers=CSRF
    )
    return response


def test_a_token_signs_a_browser_in_with_a_strict_httponly_cookie(platform: Platform) -> None:
    response = sign_in(platform, platform.admin_token)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "admin"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    for flag in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age="):
        assert flag.lower() in cookie.lower(), cookie
    # Plain HTTP: not Secure (the browser would drop it); over HTTPS it is.
    assert "secure" not in cookie.lower()

    # The cookie alone authenticates reads.
    assert platform.http.get("/api/v1/whoami").json()["name"] == "admin"


def test_cookie_requests_that_change_things_need_the_csrf_header(platform: Platform) -> None:
    platform.tenant("physics")
    sign_in(platform, platform.admin_token)
    body = {"tenant": "physics", "command": ["true"], "resources": {"cpu": 0.5, "memory": "64Mi"}}
    refused = platform.http.post("/api/v1/jobs", json=body)
    assert refused.status_code == 403
    assert CSRF_HEADER in refused.json()["message"]
    assert platform.http.post("/api/v1/jobs", json=body, headers=CSRF).status_code == 201
    # A Bearer request needs no such header: browsers never add one by themselves.
    platform.http.cookies.clear()
    bearer = {"Authorization": f"Bearer {platform.admin_token}"}
    assert platform.http.post("/api/v1/jobs", json=body, headers=bearer).status_code == 201


def test_sign_in_refuses_bad_tokens_and_forged_requests(platform: Platform) -> None:
    assert sign_in(platform, "vai_" + "x" * 43).status_code == 401
    assert sign_in(platform, "eyJhbGciOi.not.a.token").status_code == 401
    assert SESSION_COOKIE not in platform.http.cookies
    # Login CSRF: another site's form cannot sign a victim into the attacker's account.
    no_header = platform.http.post("/api/v1/session", json={"token": platform.admin_token})
    assert no_header.status_code == 403


def test_sign_out_clears_the_cookie(platform: Platform) -> None:
    sign_in(platform, platform.admin_token)
    response = platform.http.delete("/api/v1/session", headers=CSRF)
    assert response.status_code == 204
    assert SESSION_COOKIE not in platform.http.cookies
    assert platform.http.get("/api/v1/whoami").status_code == 401


def test_forged_or_expired_session_cookies_are_refused(platform: Platform) -> None:
    other_key = b"k" * 32
    forged = sign_session(Identity("admin", True), other_key, time.time(), 3600)
    platform.http.cookies.set(SESSION_COOKIE, forged)
    assert platform.http.get("/api/v1/whoami").status_code == 401
    key = platform.context.browser.key
    expired = sign_session(Identity("admin", True), key, time.time() - 7200, 3600)
    platform.http.cookies.set(SESSION_COOKIE, expired)
    response = platform.http.get("/api/v1/whoami")
    assert response.status_code == 401
    assert "expired" in response.json()["message"]


def test_options_say_whether_oidc_is_offered(platform: Platform) -> None:
    assert platform.http.get("/api/v1/session/options").json() == {"oidc": False}
    assert platform.http.get("/api/v1/session/oidc/login").status_code == 404


# -- OIDC authorization code + PKCE -------------------------------------------------------


class Provider:
    """The stand-in identity provider (see the module docstring)."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        self.codes: dict[str, dict[str, str]] = {}
        self.token_requests: list[dict[str, str]] = []

    def authorize(self, url: str, username: str, groups: list[str]) -> dict[str, str]:
        """The user signs in at the provider: a code bound to the request's challenge."""
        query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
        code = f"code-{len(self.codes)}"
        self.codes[code] = {**query, "username": username, "groups": json.dumps(groups)}
        return {"code": code, "state": query["state"]}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/protocol/openid-connect/auth",
                    "token_endpoint": f"{ISSUER}/protocol/openid-connect/token",
                },
            )
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.token_requests.append(form)
        grant = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if (
            grant is None
            or grant["code_challenge"] != challenge
            or grant["redirect_uri"] != form.get("redirect_uri")
            or form.get("client_id") != CLIENT
        ):
            return httpx.Response(400, json={"error": "invalid_grant"})
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": CLIENT,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            "preferred_username": grant["username"],
            "groups": json.loads(grant["groups"]),
        }
        id_token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})
        return httpx.Response(200, json={"id_token": id_token, "access_token": "opaque"})


@pytest.fixture
def provider(platform: Platform, tmp_path: Path) -> Iterator[Provider]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    provider = Provider(key)
    settings = OidcSettings(issuer=ISSUER, audience="virtuai-api", jwks_file=jwks, client_id=CLIENT)
    client = httpx.Client(transport=httpx.MockTransport(provider.handle))
    platform.context.browser.oidc = OidcLogin(settings, http_client=client)
    yield provider
    client.close()


def test_oidc_code_flow_with_pkce_signs_the_browser_in(
    platform: Platform, provider: Provider
) -> None:
    platform.tenant("physics")
    assert platform.http.get("/api/v1/session/options").json() == {"oidc": True}
    start = platform.http.get(
        "/api/v1/session/oidc/login", params={"next": "/#/jobs"}, follow_redirects=False
    )
    assert start.status_code == 302
    target = start.headers["location"]
    assert target.startswith(f"{ISSUER}/protocol/openid-connect/auth?")
    query = {k: v[0] for k, v in parse_qs(urlparse(target).query).items()}
    assert query["code_challenge_method"] == "S256"
    assert query["response_type"] == "code" and query["client_id"] == CLIENT
    assert "openid" in query["scope"].split()
    assert query["redirect_uri"] == "http://testserver/api/v1/session/oidc/callback"
    # The flow state rides in a Lax cookie limited to the OIDC paths.
    assert "samesite=lax" in start.headers["set-cookie"].lower()

    back = provider.authorize(target, "carol", ["virtuai:physics:member"])
    done = platform.http.get("/api/v1/session/oidc/callback", params=back)
    assert done.status_code == 200, done.text
    assert 'http-equiv="refresh"' in done.text and "/#/jobs" in done.text
    # The provider got the verifier the challenge was made from.
    assert provider.token_requests[-1]["code_verifier"]
    me = platform.http.get("/api/v1/whoami").json()
    assert me["name"] == "carol"
    assert me["tenants"] == [{"tenant": "physics", "role": "member"}]
    # The code is single-use, and the sign-in state was cleared.
    again = platform.http.get("/api/v1/session/oidc/callback", params=back)
    assert again.status_code == 401


def test_oidc_callback_with_a_wrong_state_is_refused(
    platform: Platform, provider: Provider
) -> None:
    start = platform.http.get("/api/v1/session/oidc/login", follow_redirects=False)
    back = provider.authorize(start.headers["location"], "carol", [])
    response = platform.http.get(
        "/api/v1/session/oidc/callback", params={**back, "state": "forged"}
    )
    assert response.status_code == 401
    assert "state does not match" in response.text
    assert platform.http.get("/api/v1/whoami").status_code == 401


def test_oidc_login_never_redirects_elsewhere_afterwards(
    platform: Platform, provider: Provider
) -> None:
    start = platform.http.get(
        "/api/v1/session/oidc/login",
        params={"next": "//evil.example/x"},
        follow_redirects=False,
    )
    back = provider.authorize(start.headers["location"], "carol", [])
    done = platform.http.get("/api/v1/session/oidc/callback", params=back)
    assert done.status_code == 200
    assert "evil.example" not in done.text
    assert 'content="0;url=/"' in done.text
