"""The browser session cookie: one mechanism for the dashboard (and, later, the notebook proxy).

* The cookie ``virtuai_session`` is ``HttpOnly`` (scripts cannot read it),
  ``SameSite=Strict`` (other sites' pages never send it), ``Path=/``, and
  ``Secure`` when the request came over HTTPS.  It holds an API token or a
  signed session token (:mod:`virtuai.auth.sessions`).
* A request authenticated *by the cookie* with an unsafe method (anything but
  GET, HEAD, OPTIONS) must also carry the header ``X-Virtuai-Csrf: 1``.  A
  page of another origin cannot add a custom header to a cross-origin request
  without a CORS preflight, which this server never grants; so even a browser
  that ignores ``SameSite`` cannot be made to act for its user.  Bearer
  requests need no such header: a browser never adds them by itself.

``credential_from_request`` is what an authenticating component calls: it
returns the credential and where it came from, and enforces the CSRF rule.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from virtuai.auth.keys import KEY_BYTES
from virtuai.auth.oidc_login import OidcLogin
from virtuai.domain.http import SESSION_COOKIE
from virtuai.errors import Forbidden, Unauthenticated

FLOW_COOKIE = "virtuai_oidc_flow"
FLOW_PATH = "/api/v1/session/oidc"
CSRF_HEADER = "X-Virtuai-Csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class BrowserSessions:
    """What the server gives the API for browser sign-in."""

    # Signs OIDC sessions and sign-in state; the server loads it from session.key.
    key: bytes = field(default_factory=lambda: secrets.token_bytes(KEY_BYTES))
    ttl_s: int = 12 * 3600
    oidc: OidcLogin | None = None


class Source(enum.Enum):
    BEARER = "bearer"
    COOKIE = "cookie"


def credential_from_request(request: Request) -> tuple[str, Source]:
    """The caller's credential: the Bearer header first, else the session cookie.

    Raises Unauthenticated when there is none, Forbidden when a cookie-authenticated
    unsafe request lacks the CSRF header.
    """
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>'")
        return value, Source.BEARER
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>'")
    require_csrf_header(request)
    return cookie, Source.COOKIE


def require_csrf_header(request: Request) -> None:
    if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
        raise Forbidden(f"a request signed in by cookie must send the header '{CSRF_HEADER}: 1'")


def set_session_cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def set_flow_cookie(response: Response, request: Request, value: str) -> None:
    # Lax, not Strict: the provider's redirect back is a cross-site navigation, and the
    # callback must see this cookie.  Scoped to the OIDC paths and short-lived.
    response.set_cookie(
        FLOW_COOKIE,
        value,
        max_age=600,
        path=FLOW_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def clear_flow_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        FLOW_COOKIE,
        path=FLOW_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
