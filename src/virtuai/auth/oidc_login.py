"""Browser sign-in with OpenID Connect: authorization code flow with PKCE (RFC 7636, S256).

The server is the OIDC client (``oidc.client_id``, and ``oidc.client_secret``
for a confidential client; a public client needs none, PKCE protects the
code).  Endpoints come from the provider's discovery document
(``<issuer>/.well-known/openid-configuration``), or from
``oidc.authorization_endpoint`` / ``oidc.token_endpoint`` when set.

The ID token received at the callback is verified like any bearer JWT
(issuer, signature by the provider's JWKS, expiry; see :mod:`virtuai.auth.oidc`)
with the client id as audience, and its ``nonce`` must match the one sent.
Its claims give the identity (user name, groups -> tenant roles): configure
the provider to put the groups claim in the ID token.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from virtuai.auth.identity import Identity
from virtuai.auth.oidc import OidcVerifier
from virtuai.auth.sessions import FlowState
from virtuai.errors import ConfigurationError, Unauthenticated
from virtuai.settings import OidcSettings


def code_challenge(verifier: str) -> str:
    """The S256 PKCE challenge of ``verifier``: base64url(SHA-256), no padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OidcLogin:
    """The two legs of the code flow.  Thread-safe; discovery is fetched once, lazily."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        http_client: httpx.Client | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not settings.issuer or not settings.client_id:
            raise ConfigurationError(
                "OIDC browser sign-in needs oidc.issuer and oidc.client_id", field="oidc.client_id"
            )
        self._settings = settings
        self._client = http_client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._lock = threading.Lock()
        self._endpoints: tuple[str, str] | None = None
        # ID tokens are addressed to this client: same provider, the client id as audience.
        self._id_verifier = OidcVerifier(
            settings.model_copy(update={"audience": settings.client_id}), http_client=http_client
        )

    def close(self) -> None:
        self._client.close()
        self._id_verifier.close()

    def _discover(self) -> tuple[str, str]:
        with self._lock:
            if self._endpoints is not None:
                return self._endpoints
            auth, token = self._settings.authorization_endpoint, self._settings.token_endpoint
            if not auth or not token:
                url = f"{str(self._settings.issuer).rstrip('/')}/.well-known/openid-configuration"
                try:
                    response = self._client.get(url)
                    response.raise_for_status()
                    document = response.json()
                except (httpx.HTTPError, ValueError) as error:
                    raise Unauthenticated(
                        f"the identity provider's discovery document is unavailable: {error}"
                    ) from None
                auth = auth or document.get("authorization_endpoint")
                token = token or document.get("token_endpoint")
                if not isinstance(auth, str) or not isinstance(token, str):
                    raise Unauthenticated(
                        "the identity provider's discovery document is incomplete"
                    )
            self._endpoints = (auth, token)
            return self._endpoints

    def authorization_url(self, flow: FlowState, redirect_uri: str) -> str:
        """Where to send the browser for the first leg."""
        auth, _ = self._discover()
        query = {
            "response_type": "code",
            "client_id": self._settings.client_id,
            "redirect_uri": redirect_uri,
            "scope": self._settings.scopes,
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": code_challenge(flow.verifier),
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in auth else "?"
        return f"{auth}{separator}{urlencode(query)}"

    def finish(self, flow: FlowState, state: str, code: str, redirect_uri: str) -> Identity:
        """Second leg: check ``state``, trade ``code`` for tokens, verify the ID token."""
        if not state or state != flow.state:
            raise Unauthenticated("sign-in state does not match: start again")
        _, token_url = self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": str(self._settings.client_id),
            "code_verifier": flow.verifier,
        }
        if self._settings.client_secret:
            form["client_secret"] = self._settings.client_secret
        try:
            response = self._client.post(token_url, data=form)
            body: Any = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise Unauthenticated(f"the identity provider did not answer: {error}") from None
        if response.status_code != 200 or not isinstance(body, dict):
            detail = (
                body.get("error_description") or body.get("error")
                if isinstance(body, dict)
                else None
            )
            raise Unauthenticated(
                f"the identity provider refused the code: {detail or response.status_code}"
            )
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthenticated(
                "the identity provider sent no ID token (is 'openid' in oidc.scopes?)"
            )
        identity = self._id_verifier.verify(id_token)
        # Verified just above: reading the nonce without checking again is safe.
        claims = jwt.decode(id_token, options={"verify_signature": False})
        if claims.get("nonce") != flow.nonce:
            raise Unauthenticated("the ID token's nonce does not match: start again")
        return identity
