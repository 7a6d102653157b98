"""The authenticated reverse proxy: an ASGI app in front of the API, in ``virtuai up``.

Requests under ``/user/`` and ``/svc/`` are proxied; everything else goes to
the API and the dashboard unchanged.  The proxy sits *outside* the API's
middleware: bodies are streamed both ways (no size limit, no buffering, so
uploads, downloads and Server-Sent Events flow as they come), and WebSockets
(Jupyter's kernels and terminals) are relayed message by message.

For each request: find the credential (``proxy.auth``), the route
(``proxy.routes``, cached), check access (a notebook: its owner only; not
administrators, as JupyterHub's default: a notebook is a shell as its user
with its user's files), then forward to the upstream with the route's secret
and without the caller's credentials (the ``Authorization`` header and the
session cookie never reach the workload).  A workload cannot set the
platform's session cookie either.

Refusals: no credentials -> 401 (a browser asking for a page is redirected to
the sign-in page instead), another user's notebook -> 403, no such notebook ->
404, one not running yet -> 503 with ``Retry-After`` and what it waits for.

HTTP goes through one pooled ``aiohttp.ClientSession``; WebSockets through the
``websockets`` library's asyncio client (``docs/architecture.md`` says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Hashable, Iterable
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio.to_thread
import websockets
import yarl
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from virtuai.api.browser import SESSION_COOKIE, Source
from virtuai.api.context import ApiContext
from virtuai.control.notebooks import Upstream
from virtuai.domain.notebooks import AUTH_HEADER, SECRET_HEADER
from virtuai.errors import Forbidden, NotFound, Unavailable, VirtuaiError
from virtuai.proxy.auth import (
    SessionCache,
    authenticate,
    check_same_origin,
    credential,
    fast_caller,
    forget,
    require_credential,
)
from virtuai.proxy.peers import HOP_BY_HOP, Peers, forwarded, peer_headers
from virtuai.proxy.routes import PREFIXES, Access, Route, RouteTable, Target, parse_target
from virtuai.proxy.services import ServiceHolds
from virtuai.services.access import Caller

log = logging.getLogger(__name__)

# Never forwarded upstream: hop-by-hop headers, plus what only the proxy may say.
NOT_UPSTREAM = HOP_BY_HOP | {"authorization", "cookie", SECRET_HEADER.lower(), AUTH_HEADER.lower()}
# A WebSocket's handshake headers are made by the client library.
_NOT_UPSTREAM_WS = NOT_UPSTREAM | {
    "host",
    "origin",  # checked here (proxy.auth); the upstream sees a same-machine client
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "content-length",
}
WS_MAX_MESSAGE = 64 * 2**20
# Headers aiohttp would add by itself: only what the caller sent goes upstream.
_NO_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


class Activity:
    """When this proxy last forwarded something to each workload (epoch seconds)."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}

    def touch(self, job_id: int) -> None:
        self._last[job_id] = time.time()

    def last(self, job_id: int) -> float | None:
        return self._last.get(job_id)


class ProxyApp:
    def __init__(
        self,
        context: ApiContext,
        routes: RouteTable,
        fallback: ASGIApp,
        activity: Activity | None = None,
        peers: Peers | None = None,
        services: ServiceHolds | None = None,
    ) -> None:
        self._context = context
        self._routes = routes
        self._fallback = fallback
        self.activity = activity or Activity()
        self._peers = peers or Peers()
        self.services = services
        self._sessions = SessionCache()
        self._client: aiohttp.ClientSession | None = None  # made in the server's event loop
        self._refreshing: set[Hashable] = set()
        self._background: set[asyncio.Future[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not scope["path"].startswith(PREFIXES):
            await self._fallback(scope, receive, send)
            return
        target = parse_target(scope["path"])
        if target is None:
            await self._fallback(scope, receive, send)  # the API's 404
            return
        if scope["type"] == "http":
            await self._http(scope, receive, send, target)
        else:
            await self._websocket(scope, receive, send, target)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _http_client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30),
                # Bytes pass as they are (compressed stays compressed); no cookies kept here;
                # no proxy from the environment: upstreams are on the platform's own nodes.
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._client

    # -- who, what, where ------------------------------------------------------------------

    async def _admit(self, connection: HTTPConnection, target: Target, method: str | None) -> Route:
        """The route, if the caller may use it now; else a VirtuaiError saying why."""
        found = credential(connection)
        caller: Caller | None = None
        if found is not None:
            value, source = found
            if source is Source.COOKIE:
                check_same_origin(connection, method)
            caller, refresh = fast_caller(self._context, value, source, self._sessions)
            if caller is None:
                caller = await anyio.to_thread.run_sync(
                    authenticate, self._context, value, source, self._sessions
                )
            elif refresh:
                self._in_background(("caller", value), self._refresh_caller(value, source))
        if target.kind == "user":
            require_credential(found)
            assert caller is not None
            if caller.name != target.owner:
                # Answered before any lookup: whether another user has a notebook of that
                # name is not the caller's business.
                raise Forbidden("a notebook is reachable by its owner only")
        hit, route, refresh = self._routes.cached(target)
        if not hit:
            route = await anyio.to_thread.run_sync(self._routes.lookup, target)
        elif refresh:
            self._in_background(target, self._refresh(target))
        if route is None:
            if target.kind == "svc":
                require_credential(found)  # anonymous callers learn no service's name
            raise NotFound(f"nothing is served at {target.prefix}")
        self._authorize(route, caller, found)
        return route

    @staticmethod
    def _authorize(route: Route, caller: Caller | None, found: object) -> None:
        if route.access is Access.PUBLIC:
            return
        require_credential(found)  # type: ignore[arg-type]
        assert caller is not None
        if route.access is Access.OWNER and caller.user_id != route.owner_user_id:
            raise Forbidden("a notebook is reachable by its owner only")
        if route.access is Access.TENANT and route.tenant not in caller.roles:
            raise Forbidden(f"only members of tenant {route.tenant} may use this service")

    def _in_background(self, key: Hashable, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` unless the same refresh (``key``) is already running."""
        if key in self._refreshing:
            work.close()
            return
        self._refreshing.add(key)
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _task: self._refreshing.discard(key))

    async def _refresh(self, target: Target) -> None:
        try:
            await anyio.to_thread.run_sync(self._routes.lookup, target)
        except Exception:
            log.exception("refreshing the route of %s failed", target.prefix)

    async def _refresh_caller(self, value: str, source: Source) -> None:
        """Read a busy credential again before its cache entry ends (no request waits)."""
        try:
            await anyio.to_thread.run_sync(
                functools.partial(
                    authenticate, self._context, value, source, self._sessions, cached=False
                )
            )
        except VirtuaiError:
            forget(self._context, value, source, self._sessions)  # revoked, expired, disabled
        except Exception:
            log.exception("refreshing a caller failed")

    # -- HTTP ------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send, target: Target) -> None:
        connection = HTTPConnection(scope)
        method: str = scope["method"]
        try:
            route = await self._admit(connection, target, method)
            upstream = route.pick(not forwarded(scope))
            if upstream is None and route.service_id is not None and self.services is not None:
                route = await self.services.hold(target, route)  # a cold start
                upstream = route.pick(not forwarded(scope))
            if upstream is None:
                await _unavailable(send, connection, route)
                return
        except VirtuaiError as error:
            await _refuse(send, connection, error, self._context)
            return
        if not target.rest:  # /user/alice/lab -> /user/alice/lab/ (Jupyter's base_url)
            await _redirect(send, target.prefix + _query(scope))
            return
        self.activity.touch(route.job_id)
        try:
            url, headers = self._where(scope, connection, upstream, route)
        except VirtuaiError as error:
            await _refuse(send, connection, error, self._context)
            return
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        client = self._http_client()
        try:
            response = await client.request(
                method,
                # The path as the caller sent it: already encoded, not parsed again.
                yarl.URL(url, encoded=True),
                headers=headers,
                data=_body(receive) if has_body else None,
                allow_redirects=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
            )
        except (aiohttp.ClientError, TimeoutError) as error:
            self._routes.forget(target)
            log.info("proxy: %s unreachable: %s", url, error)
            if _wants_page(connection) and scope["method"] in ("GET", "HEAD"):
                # A browser that came while the job runs but its server does not listen
                # yet (JupyterLab takes seconds): the page that reloads itself, not JSON.
                await _starting_page(send, "it does not answer yet")
                return
            await _refuse(
                send, connection, Unavailable("the workload does not answer (yet)"), self._context
            )
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": downstream_headers(response.raw_headers),
                }
            )
            # Each chunk as it comes (SSE, downloads); a body already complete goes in the
            # same message as its end, so a small answer costs one write, not two.
            content = response.content
            async for chunk in content.iter_any():
                done = content.at_eof()
                await send({"type": "http.response.body", "body": chunk, "more_body": not done})
                if done:
                    return
                self.activity.touch(route.job_id)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            response.release()

    def _where(
        self, scope: Scope, connection: HTTPConnection, upstream: Upstream, route: Route
    ) -> tuple[str, list[tuple[str, str]]]:
        """The URL and headers of the request upstream: the workload itself, or the server of
        its node when that is another machine (``proxy.peers``)."""
        websocket = scope["type"] == "websocket"
        if not self._peers.remote(upstream):
            drop = _NOT_UPSTREAM_WS if websocket else NOT_UPSTREAM
            url = upstream.url("ws" if websocket else "http") + _raw_path(scope)[route.strip :]
            return url, upstream_headers(connection, scope, upstream, route, drop)
        if forwarded(scope) or not self._peers.port:
            raise Unavailable(
                f"it runs on node {upstream.node}, which this server does not forward to"
            )
        # The whole path: the node's server resolves the route (and strips it) again.
        url = self._peers.url(upstream, "ws" if websocket else "http") + _raw_path(scope)
        return url, peer_headers(scope, self._peers.name, websocket=websocket)

    # -- WebSocket -------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, target: Target) -> None:
        connection = HTTPConnection(scope)
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            route = await self._admit(connection, target, None)
            upstream = route.pick(not forwarded(scope))
            if upstream is None and route.service_id is not None and self.services is not None:
                route = await self.services.hold(target, route)
                upstream = route.pick(not forwarded(scope))
            if upstream is None:
                raise Unavailable(f"not running yet: {route.state}, {route.reason}")
        except VirtuaiError as error:
            await _refuse_websocket(scope, send, error)
            return
        try:
            url, headers = self._where(scope, connection, upstream, route)
        except VirtuaiError as error:
            await _refuse_websocket(scope, send, error)
            return
        try:
            server = await websockets.connect(
                url,
                additional_headers=headers,
                subprotocols=[Subprotocol(p) for p in scope.get("subprotocols", [])] or None,
                compression=None,
                max_size=WS_MAX_MESSAGE,
                ping_interval=None,
                open_timeout=10,
                proxy=None,
                user_agent_header=None,
            )
        except (OSError, websockets.exceptions.WebSocketException, TimeoutError) as error:
            self._routes.forget(target)
            status = getattr(getattr(error, "response", None), "status_code", None)
            log.info("proxy: websocket %s refused: %s", url, error)
            if isinstance(status, int) and 400 <= status < 500:
                await _refuse_websocket(scope, send, Forbidden(f"the workload said {status}"))
            else:
                await _refuse_websocket(scope, send, Unavailable("the workload does not answer"))
            return
        self.activity.touch(route.job_id)
        await send({"type": "websocket.accept", "subprotocol": server.subprotocol})
        await self._relay(receive, send, server, route.job_id)

    async def _relay(
        self, receive: Receive, send: Send, server: ClientConnection, job_id: int
    ) -> None:
        async def downstream() -> None:
            try:
                async for data in server:
                    self.activity.touch(job_id)
                    if isinstance(data, str):
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": data})
            except websockets.exceptions.ConnectionClosed:
                pass
            code = server.close_code or 1000
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code if code != 1005 else 1000})

        async def upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await server.close(message.get("code", 1000))
                    return
                self.activity.touch(job_id)
                text, data = message.get("text"), message.get("bytes")
                await server.send(text if text is not None else data or b"")

        down = asyncio.ensure_future(downstream())
        up = asyncio.ensure_future(upstream())
        try:
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (down, up):
                task.cancel()
            await server.close()
            for task in (down, up):
                with contextlib.suppress(BaseException):
                    await task


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"])
    return path + _query(scope)


def _query(scope: Scope) -> str:
    query: bytes = scope.get("query_string", b"")
    return "?" + query.decode("latin-1") if query else ""


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


def downstream_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    result = []
    for key, value in raw:
        lower = key.lower()
        if lower.decode("latin-1") in HOP_BY_HOP:
            continue
        # A workload must not sign its user out, or in as someone else.
        if lower == b"set-cookie" and value.lstrip().startswith(SESSION_COOKIE.encode() + b"="):
            continue
        result.append((lower, value))
    return result


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _wants_page(connection: HTTPConnection) -> bool:
    return "text/html" in connection.headers.get("accept", "")


def _error_body(error: VirtuaiError) -> bytes:
    return json.dumps(error.to_dict()).encode()


_STATUS = {"unauthenticated": 401, "forbidden": 403, "not_found": 404, "unavailable": 503}


async def _refuse(
    send: Send, connection: HTTPConnection, error: VirtuaiError, context: ApiContext
) -> None:
    status = _STATUS.get(error.code, 400)
    if status == 401 and _wants_page(connection) and connection.scope["method"] in ("GET", "HEAD"):
        path = connection.scope["path"] + _query(connection.scope)
        login = "/api/v1/session/oidc/login" if context.browser.oidc is not None else "/"
        await _redirect(send, f"{login}?next={quote(path, safe='')}")
        return
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status == 503:
        headers.append((b"retry-after", b"2"))
    await _respond(send, status, headers, _error_body(error))


async def _unavailable(send: Send, connection: HTTPConnection, route: Route) -> None:
    message = f"it is {route.state}: {route.reason}" if route.reason else f"it is {route.state}"
    error = Unavailable(f"not running yet ({message}); try again in a moment")
    if _wants_page(connection):
        await _starting_page(send, message)
        return
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"2")]
    await _respond(send, 503, headers, _error_body(error))


async def _starting_page(send: Send, message: str) -> None:
    page = (
        "<!doctype html><meta charset='utf-8'><meta http-equiv='refresh' content='2'>"
        f"<title>Starting</title><p>It is starting ({_html(message)}).</p>"
    ).encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"retry-after", b"2")]
    await _respond(send, 503, headers, page)


async def _redirect(send: Send, location: str) -> None:
    await _respond(send, 302, [(b"location", location.encode("latin-1"))], b"")


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _refuse_websocket(scope: Scope, send: Send, error: VirtuaiError) -> None:
    """A plain HTTP answer to the handshake when the server can give one (uvicorn can)."""
    status = _STATUS.get(error.code, 400)
    if "websocket.http.response" in scope.get("extensions", {}):
        body = _error_body(error)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
