"""Browser sessions: what the session cookie carries, and the short-lived OIDC flow state.

A browser signs in in one of two ways, and the cookie carries a credential the
API already knows how to check on every request:

* **with an API token**: the cookie *is* the token.  Nothing is derived from
  it, so expiry and revocation of the token end the session at once.
* **with OIDC** (authorization code + PKCE): the provider's ID token is
  verified once, at the callback, and the identity it proves (user name,
  tenant roles, admin flag) is kept in a *session token* signed by this
  server (a JWT, HS256, with the server's own key and issuer
  ``virtuai-session``), valid for ``web.session_ttl_s``.  The provider's
  tokens are not stored: they are short-lived (minutes) and large, and the
  identity is all the API needs.  Roles follow the provider's groups again at
  the next sign-in.

The key is 32 random bytes kept in ``$VIRTUAI_HOME/session.key`` (0600);
deleting it ends every OIDC browser session.  Session tokens never start with
``vai_``, so a cookie's kind is known without parsing it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import jwt

from virtuai.auth.identity import Identity
from virtuai.domain.tenancy import NAME_RE, Role
from virtuai.errors import Unauthenticated

SESSION_ISSUER = "virtuai-session"
FLOW_ISSUER = "virtuai-oidc-flow"
_ALGORITHM = "HS256"
# A signed session is a few hundred bytes; refuse anything much larger unparsed.
MAX_SESSION_CHARS = 8 * 1024


def sign_session(identity: Identity, key: bytes, now: float, ttl_s: float) -> str:
    """A session token for ``identity``, valid for ``ttl_s`` seconds from ``now``."""
    claims = {
        "iss": SESSION_ISSUER,
        "sub": identity.username,
        "adm": identity.is_admin,
        "roles": {tenant: role.value for tenant, role in identity.tenant_roles.items()},
        "src": identity.source,
        "iat": int(now),
        "exp": int(now + ttl_s),
    }
    return jwt.encode(claims, key, algorithm=_ALGORITHM)


def verify_session(token: str, key: bytes, now: float) -> Identity:
    """The identity a session token stands for; Unauthenticated if forged or expired."""
    claims = _decode(token, key, SESSION_ISSUER, now, "session")
    username, roles = claims.get("sub"), claims.get("roles")
    if not isinstance(username, str) or not NAME_RE.fullmatch(username):
        raise Unauthenticated("malformed session: sign in again")
    if not isinstance(roles, dict):
        raise Unauthenticated("malformed session: sign in again")
    try:
        tenant_roles = {str(t): Role(r) for t, r in roles.items()}
    except ValueError:
        raise Unauthenticated("malformed session: sign in again") from None
    return Identity(
        username=username,
        is_admin=claims.get("adm") is True,
        tenant_roles=tenant_roles,
        source=str(claims.get("src", "oidc")),
    )


@dataclass(frozen=True)
class FlowState:
    """What the OIDC callback must match: kept in a signed cookie between the two legs."""

    state: str
    verifier: str
    nonce: str
    next_path: str = "/"


def new_flow(next_path: str = "/") -> FlowState:
    return FlowState(
        state=secrets.token_urlsafe(24),
        verifier=secrets.token_urlsafe(48),  # 64 characters: RFC 7636 wants 43-128
        nonce=secrets.token_urlsafe(24),
        next_path=next_path,
    )


def sign_flow(flow: FlowState, key: bytes, now: float, ttl_s: float = 600) -> str:
    claims = {
        "iss": FLOW_ISSUER,
        "state": flow.state,
        "verifier": flow.verifier,
        "nonce": flow.nonce,
        "next": flow.next_path,
        "iat": int(now),
        "exp": int(now + ttl_s),
    }
    return jwt.encode(claims, key, algorithm=_ALGORITHM)


def verify_flow(token: str, key: bytes, now: float) -> FlowState:
    claims = _decode(token, key, FLOW_ISSUER, now, "sign-in")
    fields = [claims.get(k) for k in ("state", "verifier", "nonce", "next")]
    if not all(isinstance(f, str) for f in fields):
        raise Unauthenticated("malformed sign-in state: start again")
    state, verifier, nonce, next_path = (str(f) for f in fields)
    return FlowState(state, verifier, nonce, next_path)


def _decode(token: str, key: bytes, issuer: str, now: float, what: str) -> dict[str, Any]:
    if len(token) > MAX_SESSION_CHARS:
        raise Unauthenticated(f"malformed {what}: sign in again")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[_ALGORITHM],
            issuer=issuer,
            options={"require": ["exp", "iat", "iss"], "verify_exp": False},
        )
    except jwt.PyJWTError:
        raise Unauthenticated(f"invalid {what}: sign in again") from None
    # Expiry against the server's clock (injected), not the library's.
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or now >= exp:
        raise Unauthenticated(f"{what} expired: sign in again")
    return claims
