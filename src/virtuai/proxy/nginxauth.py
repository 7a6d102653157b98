"""nginx's ``auth_request`` to the server (``proxy.nginx``): may nginx pass this request
to the workload itself, and where?

The question is the original request rebuilt from the subrequest (its method, raw
URI, headers, and whether it had a body or asked for an upgrade); the builtin proxy
decides with its own caches and rules (``ProxyApp.admitted``, as its fast path).
200 with the workload's address (the peer nginx's balancer picks), secret, whether
the prefix is stripped, how the
caller signed in and the cookies to pass (the session's removed, as
``proxy.headers`` does); 401 for anything else, which nginx answers by handing the
request to the builtin proxy.  Only nginx may ask: the request must carry the token
written in nginx's configuration (mode 0600); the public nginx refuses the path.

Counting: nginx reports each request it served (``proxy.nginx.Counter``); ``count``
applies it to the route's meter (the autoscaler) and the notebooks' activity.
"""

from __future__ import annotations

import asyncio
import hmac
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from virtuai.proxy.app import ProxyApp
from virtuai.proxy.headers import _kept_cookies
from virtuai.proxy.nginx import AUTH_PATH, TOKEN_HEADER, address
from virtuai.proxy.routes import RouteTable, parse_target

_TOKEN = TOKEN_HEADER.lower().encode()
_OURS = frozenset(
    {b"x-original-uri", b"x-original-method", b"x-virtuai-upgrade", b"x-virtuai-body", _TOKEN}
)
_NO = {"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]}
_END = {"type": "http.response.body", "body": b""}


class NginxAuth:
    """The server's app with nginx's question answered in front of it."""

    def __init__(
        self,
        app: ASGIApp,
        proxy: ProxyApp,
        routes: RouteTable,
        token: str,
    ) -> None:
        self._app = app
        self._proxy = proxy
        self._routes = routes
        self._token = token.encode()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != AUTH_PATH:
            await self._app(scope, receive, send)
            return
        self._loop = asyncio.get_running_loop()
        question = _question(scope, self._token)
        answer = None if question is None else self._proxy.admitted(question)
        if answer is None or question is None:
            await send(_NO)
            await send(_END)
            return
        route, upstream = answer
        target = parse_target(question["path"])
        assert target is not None  # admitted
        if route.strip not in (0, len(target.prefix) - 1):
            await send(_NO)  # not a prefix nginx knows how to strip
            await send(_END)
            return
        bearer = False
        cookies = b""
        for key, value in question["headers"]:
            if key == b"authorization":
                bearer = value[:7].lower() == b"bearer "
            elif key == b"cookie":
                cookies = _kept_cookies(value)
        headers = [
            (b"x-virtuai-upstream", address(upstream.host, upstream.port).encode()),
            (b"x-virtuai-secret", upstream.secret.encode("latin-1")),
            (b"x-virtuai-strip", b"1" if route.strip else b"0"),
            (b"x-virtuai-as", b"bearer" if bearer else b"cookie"),
            (b"x-virtuai-cookie", cookies),
            (b"x-virtuai-job", str(route.job_id).encode()),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(_END)

    def count(self, batch: dict[tuple[str, int], int]) -> None:
        """Requests nginx served (called on the counter's thread)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._count, batch)

    def _count(self, batch: dict[tuple[str, int], int]) -> None:
        for (prefix, job_id), requests in batch.items():
            self._proxy.activity.touch(job_id)
            target = parse_target(prefix)
            if target is None:
                continue
            _hit, route, _refresh = self._routes.cached(target)
            if route is not None and route.job_id == job_id and route.meter is not None:
                for _ in range(requests):
                    route.meter()


def _question(scope: Scope, token: bytes) -> Scope | None:
    """The original request's scope as the builtin proxy would see it; ``None`` if the
    question does not come from our nginx."""
    uri = method = b""
    given = b""
    headers: list[tuple[bytes, bytes]] = []
    extra: list[tuple[bytes, bytes]] = []
    for key, value in scope["headers"]:
        if key not in _OURS:
            headers.append((key, value))
        elif key == _TOKEN:
            given = value
        elif key == b"x-original-uri":
            uri = value
        elif key == b"x-original-method":
            method = value
        elif key == b"x-virtuai-upgrade" and value:
            extra.append((b"upgrade", value))
        elif key == b"x-virtuai-body" and value:
            extra.append((b"transfer-encoding", value))
    if not hmac.compare_digest(given, token) or not uri or not method:
        return None
    raw_path, _, query = uri.partition(b"?")
    return {
        "type": "http",
        "method": method.decode("latin-1"),
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers + extra,
        "client": scope.get("client"),
        "scheme": scope.get("scheme", "http"),
    }
