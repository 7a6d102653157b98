"""Who calls the proxy: the platform's own credentials, as the API checks them.

* ``Authorization: Bearer <API token or OIDC JWT>`` (``api.deps.bearer_caller``,
  with the API's token cache);
* else the browser's session cookie (``api.browser``): an API token, or a
  session signed at OIDC sign-in (``auth.sessions``).

Other ``Authorization`` schemes (JupyterLab sends ``token ...`` when it has a
token, which it never has here) are ignored, never forwarded.

Cross-site requests: the cookie is ``SameSite=Strict``; in addition a request
authenticated by the cookie that can change something (an unsafe method, or
any WebSocket: browsers do not apply CORS to them) must come from this origin
(its ``Origin`` names the host it was sent to) or carry ``X-Virtuai-Csrf: 1``.
Jupyter's pages send ``Origin`` on such requests, so they pass unchanged.
"""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, cookie_parser

from virtuai.api.browser import CSRF_HEADER, SAFE_METHODS, Source
from virtuai.api.context import ApiContext
from virtuai.api.deps import bearer_caller
from virtuai.auth.sessions import verify_session
from virtuai.auth.tokens import hash_token, looks_like_api_token
from virtuai.domain.http import SESSION_COOKIE
from virtuai.errors import Forbidden, Unauthenticated
from virtuai.proxy.peers import FORWARDED_BY
from virtuai.services.access import Caller
from virtuai.services.identity import authenticate_identity
from virtuai.services.tokencache import GENERATION
from virtuai.store.db import transaction

_SESSION_CACHE_S = 10.0


def credential(connection: HTTPConnection) -> tuple[str, Source] | None:
    """The caller's credential and where it came from; ``None`` when there is none."""
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), Source.BEARER
    cookie = connection.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, Source.COOKIE
    return None


_FORWARDED_BY_RAW = FORWARDED_BY.encode()
_NOT_PLAIN = frozenset({b"content-length", b"transfer-encoding", b"upgrade", _FORWARDED_BY_RAW})


def plain_credential(headers: list[tuple[bytes, bytes]]) -> tuple[bool, tuple[str, Source] | None]:
    """Whether a request is plain for the fast path (no body, no upgrade, not handed over
    by another server), and its credential as :func:`credential` finds it (from the raw
    headers: this runs for every request)."""
    bearer: str | None = None
    cookie: bytes | None = None
    for key, value in headers:
        if key in _NOT_PLAIN:
            if key != b"content-length" or value.strip() != b"0":
                return False, None
        elif key == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                bearer = rest.strip()
        elif key == b"cookie" and cookie is None:
            cookie = value
    if bearer is not None:
        return True, (bearer, Source.BEARER)
    if cookie is not None:
        session = cookie_parser(cookie.decode("latin-1")).get(SESSION_COOKIE)
        if session:
            return True, (session, Source.COOKIE)
    return True, None


def check_same_origin(connection: HTTPConnection, method: str | None) -> None:
    """Refuse a cookie-authenticated request that may come from another site."""
    if method is not None and method in SAFE_METHODS:
        return
    if connection.headers.get(CSRF_HEADER) == "1":
        return
    origin = connection.headers.get("origin")
    host = connection.headers.get("host", "")
    if origin is not None and urlsplit(origin).netloc == host and host:
        return
    raise Forbidden(
        "a request signed in by cookie must come from this site's pages "
        f"(Origin) or send the header '{CSRF_HEADER}: 1'"
    )


class SessionCache:
    """Callers of browser sessions for a few seconds, so that a page's hundred requests do
    not each verify the session and read the user.  As the API's token cache
    (``services.tokencache``): a change of who may do what committed by this process
    empties it at once, another server's within ``ttl_s``; past half its life an entry
    is read again in the background, so a busy page never waits for the database."""

    def __init__(self, ttl_s: float = _SESSION_CACHE_S) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, int, Caller]] = {}

    def get(self, cookie: str) -> Caller | None:
        return self.lookup(cookie)[0]

    def lookup(self, cookie: str) -> tuple[Caller | None, bool]:
        """The caller, and whether its entry is past half its life."""
        key = _digest(cookie)
        entry = self._entries.get(key)
        if entry is None:
            return None, False
        left = entry[0] - time.monotonic()
        if left <= 0 or entry[1] != GENERATION.value:
            self._entries.pop(key, None)
            return None, False
        return entry[2], left < self._ttl_s / 2

    def put(self, cookie: str, caller: Caller, generation: int) -> None:
        if generation != GENERATION.value:
            return  # who may do what changed while it was read: do not keep it
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[_digest(cookie)] = (time.monotonic() + self._ttl_s, generation, caller)

    def forget(self, cookie: str) -> None:
        self._entries.pop(_digest(cookie), None)


def authenticate(
    context: ApiContext, value: str, source: Source, cache: SessionCache, *, cached: bool = True
) -> Caller:
    """The caller behind a credential (blocking: may read the database).  ``cached=False``
    reads it again even if it is cached (a refresh ahead of the entry's end)."""
    if source is Source.BEARER or looks_like_api_token(value):
        # An API token (header or cookie) or a JWT: the API's own path and cache.
        return bearer_caller(context, value, cached=cached)
    if cached:
        known = cache.get(value)
        if known is not None:
            return known
    generation = GENERATION.value
    identity = verify_session(value, context.browser.key, context.clock.now().timestamp())
    with transaction(context.sessions) as session:
        caller = authenticate_identity(session, identity, context.clock.now())
    cache.put(value, caller, generation)
    return caller


def fast_caller(
    context: ApiContext, value: str, source: Source, cache: SessionCache
) -> tuple[Caller | None, bool]:
    """The caller if it is known without I/O (token or session cache), else ``None``; and
    whether it should be read again in the background (``authenticate(cached=False)``)."""
    if source is Source.BEARER or looks_like_api_token(value):
        if not looks_like_api_token(value):
            return None, False  # a JWT: verified per request (its own key cache)
        return context.tokens.lookup(hash_token(value))
    return cache.lookup(value)


def forget(context: ApiContext, value: str, source: Source, cache: SessionCache) -> None:
    """Drop what is cached of a credential that was refused."""
    if looks_like_api_token(value):
        context.tokens.forget(hash_token(value))
    if source is Source.COOKIE:
        cache.forget(value)


def require_credential(found: tuple[str, Source] | None) -> tuple[str, Source]:
    if found is None:
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>'")
    return found


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
