"""What the proxy passes on of a request's and an answer's headers.

Upstream: the caller's headers but credentials (``Authorization``, the session
cookie), hop-by-hop ones and what only the proxy may say (the workload's secret);
who forwarded it (``X-Forwarded-For``, ``-Proto``), the workload's secret, and how
the caller signed in.  Downstream: the answer's headers but hop-by-hop ones and any
``Set-Cookie`` of the platform's session cookie (a workload must not sign its user
out, or in as someone else).

These run for every request: one pass over the raw header list, no parsing into
objects.  ``RequestHead`` is what the HTTP path sends (bytes, built once per request
and finished per upstream with its secret); ``upstream_headers`` is the same rule
as text pairs, for the WebSocket client.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import HTTPConnection
from starlette.types import Scope

from virtuai.control.notebooks import Upstream
from virtuai.domain.http import HOP_BY_HOP, SESSION_COOKIE
from virtuai.domain.notebooks import AUTH_HEADER, SECRET_HEADER
from virtuai.proxy.routes import Route

# Never forwarded upstream: hop-by-hop headers, plus what only the proxy may say.
NOT_UPSTREAM = HOP_BY_HOP | {"authorization", "cookie", SECRET_HEADER.lower(), AUTH_HEADER.lower()}
# HTTP: ``Expect: 100-continue`` was answered by this server (uvicorn, when the body is
# first read); framing is the proxy's own (``RequestHead.chunked``).
_NOT_UPSTREAM_HTTP = frozenset(
    k.encode() for k in NOT_UPSTREAM | {"expect", "x-forwarded-for", "content-length"}
)
_HOP_BY_HOP_RAW = frozenset(k.encode() for k in HOP_BY_HOP)
_SESSION_RAW = SESSION_COOKIE.encode()
_SECRET_LINE = SECRET_HEADER.encode() + b": "
_AUTH_BEARER = AUTH_HEADER.encode() + b": bearer\r\n"
_AUTH_COOKIE = AUTH_HEADER.encode() + b": cookie\r\n"


class RequestHead:
    """The request line and headers for an upstream, but its secret (per upstream)."""

    __slots__ = ("_host", "_start", "chunked", "has_body")

    def __init__(self, scope: Scope, path: str) -> None:
        lines = [f"{scope['method']} {path} HTTP/1.1\r\n".encode("latin-1")]
        prior = b""
        bearer = False
        length: bytes | None = None
        chunked = False
        host = False
        for raw_key, value in scope["headers"]:
            key = raw_key.lower()
            if key not in _NOT_UPSTREAM_HTTP:
                lines += (key, b": ", value, b"\r\n")
                if key == b"host":
                    host = True
            elif key == b"cookie":
                kept = _kept_cookies(value)
                if kept:
                    lines += (b"cookie: ", kept, b"\r\n")
            elif key == b"authorization":
                bearer = value[:7].lower() == b"bearer "
            elif key == b"x-forwarded-for":
                prior = value
            elif key == b"content-length":
                length = value
            elif key == b"transfer-encoding":
                chunked = True
        client = scope.get("client")
        if client:
            address = client[0].encode("latin-1")
            lines += (b"x-forwarded-for: ", prior + b", " + address if prior else address, b"\r\n")
        elif prior:
            lines += (b"x-forwarded-for: ", prior, b"\r\n")
        proto = b"https" if scope.get("scheme") in ("https", "wss") else b"http"
        lines += (b"x-forwarded-proto: ", proto, b"\r\n")
        lines.append(_AUTH_BEARER if bearer else _AUTH_COOKIE)
        # A body as it came: its length, or chunked (both given: chunked, RFC 9112 6.3).
        if chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        elif length is not None:
            lines += (b"content-length: ", length, b"\r\n")
        self._start = b"".join(lines)
        self.chunked = chunked
        self.has_body = chunked or length is not None
        self._host = host

    def to(self, upstream: Upstream, port: int | None = None) -> bytes:
        """The whole head for ``upstream`` (with its secret)."""
        host = b""
        if not self._host:  # an HTTP/1.0 caller: HTTP/1.1 needs one
            name = f"[{upstream.host}]" if ":" in upstream.host else upstream.host
            host = f"host: {name}:{port or upstream.port}\r\n".encode("latin-1")
        secret = upstream.secret.encode("latin-1")
        return b"".join((self._start, host, _SECRET_LINE, secret, b"\r\n\r\n"))


def head_of(scope: Scope, path: str, headers: list[tuple[str, str]]) -> bytes:
    """A request head from text pairs (the hand-over to another machine's server)."""
    lines = [f"{scope['method']} {path} HTTP/1.1\r\n"]
    lines += [f"{key}: {value}\r\n" for key, value in headers]
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def _kept_cookies(header: bytes) -> bytes:
    """The cookies but the platform's session."""
    if _SESSION_RAW not in header:
        return header
    kept = [
        part.strip()
        for part in header.split(b";")
        if part.strip().partition(b"=")[0] != _SESSION_RAW and b"=" in part
    ]
    return b"; ".join(kept)


def upstream_headers(
    connection: HTTPConnection,
    scope: Scope,
    upstream: Upstream,
    route: Route,
    drop: frozenset[str],
) -> list[tuple[str, str]]:
    """What goes upstream: the caller's headers but ``drop`` (credentials, hop-by-hop), the
    cookies but the session's, who forwarded it, and the workload's secret.  One pass
    over the raw headers: this runs for every request."""
    headers: list[tuple[str, str]] = []
    prior = ""
    bearer = False
    for raw_key, raw_value in scope["headers"]:
        key, value = raw_key.decode("latin-1").lower(), raw_value.decode("latin-1")
        if key == "cookie":
            kept = [c for c in _cookie_pairs(value) if c[0] != SESSION_COOKIE]
            if kept:
                headers.append(("cookie", "; ".join(f"{k}={v}" for k, v in kept)))
            continue
        if key == "authorization":
            bearer = value[:7].lower() == "bearer "
        elif key == "x-forwarded-for":
            prior = value
            continue
        if key not in drop:
            headers.append((key, value))
    client = scope.get("client")
    if client:
        headers.append(("x-forwarded-for", f"{prior}, {client[0]}" if prior else client[0]))
    elif prior:
        headers.append(("x-forwarded-for", prior))
    headers.append(("x-forwarded-proto", scope.get("scheme", "http").replace("ws", "http")))
    headers.append((SECRET_HEADER, upstream.secret))
    headers.append((AUTH_HEADER, "bearer" if bearer else "cookie"))
    return headers


def _cookie_pairs(header: str) -> list[tuple[str, str]]:
    pairs = []
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            pairs.append((name, value))
    return pairs


def sets_session(set_cookie: bytes) -> bool:
    """Whether a ``Set-Cookie`` value sets the platform's session cookie: its name, as a
    browser reads it (RFC 6265 5.2: what comes before the first ``=``, whitespace around it
    removed; names are case-sensitive), is the session's.  nginx's engine applies the same
    rule (``proxy.nginx``'s header filter)."""
    return set_cookie.partition(b"=")[0].strip() == _SESSION_RAW


def downstream_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    result = []
    for key, value in raw:
        lower = key.lower()
        if lower in _HOP_BY_HOP_RAW:
            continue
        # A workload must not sign its user out, or in as someone else.
        if lower == b"set-cookie" and sets_session(value):
            continue
        result.append((lower, value))
    return result
