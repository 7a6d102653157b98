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

HTTP goes through the proxy's own keep-alive pool (``proxy.upstream``, httptools);
WebSockets through the ``websockets`` library's asyncio client
(``docs/architecture.md`` says why).  A service's request that could not reach a
replica is sent to another one (``_http``; the failed replica is ``Suspects`` until
its next readiness probe); one that reached a replica which then broke off is retried
only if it can do no harm twice (idempotent, no body), else answered 502 naming the
replica (``answers.broken_off``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Hashable
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import websockets
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from virtuai.api.browser import Source
from virtuai.api.context import ApiContext
from virtuai.control.notebooks import Upstream
from virtuai.errors import Forbidden, NotFound, Unavailable, VirtuaiError
from virtuai.proxy.answers import (
    NO_ANSWER,
    broken_off,
    query,
    redirect,
    refuse,
    refuse_websocket,
    starting_page,
    unavailable,
    wants_page,
)
from virtuai.proxy.auth import (
    SessionCache,
    authenticate,
    check_same_origin,
    credential,
    fast_caller,
    forget,
    plain_credential,
    require_credential,
)
from virtuai.proxy.fastpath import FastRequest
from virtuai.proxy.headers import (
    NOT_UPSTREAM,
    RequestHead,
    downstream_headers,
    head_of,
    upstream_headers,
)
from virtuai.proxy.peers import Peers, forwarded, peer_headers
from virtuai.proxy.routes import (
    PREFIXES,
    Access,
    Route,
    RouteTable,
    Suspects,
    Target,
    parse_target,
)
from virtuai.proxy.services import ServiceHolds
from virtuai.proxy.upstream import Response, UpstreamError, UpstreamPool
from virtuai.services.access import Caller

log = logging.getLogger(__name__)

__all__ = ["NOT_UPSTREAM", "ProxyApp", "downstream_headers", "upstream_headers"]
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
# Sent again to another replica after a reset with no answer (RFC 9110 9.2.2): at most
# twice the effect of once, which is none.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


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
        suspects: Suspects | None = None,
    ) -> None:
        self._context = context
        self._routes = routes
        self._fallback = fallback
        self.activity = activity or Activity()
        self._peers = peers or Peers()
        self.services = services
        self._sessions = SessionCache()
        self._pool = UpstreamPool()
        self._suspects = suspects or Suspects()
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
        await self._pool.aclose()

    def fast(self, scope: Scope) -> FastRequest | None:
        """The request, ready to relay, if it can take the fast path (``proxy.fastpath``):
        admitted as :meth:`admitted` says, to a workload with an idle connection; else
        ``None`` and the ASGI path takes it, as always.  No I/O: called on the event loop
        for every request."""
        admitted = self.admitted(scope, count=True)
        if admitted is None:
            return None
        route, upstream = admitted
        connection = self._pool.take(upstream.host, upstream.port)
        if connection is None:
            return None
        self.activity.touch(route.job_id)
        head = RequestHead(scope, _raw_path(scope)[route.strip :]).to(upstream)
        touch = functools.partial(self.activity.touch, route.job_id)
        return FastRequest(connection, head, touch, downstream_headers)

    def admitted(self, scope: Scope, *, count: bool = False) -> tuple[Route, Upstream] | None:
        """The route and upstream of a request that may be passed on without this proxy's
        ASGI path (the fast path, and nginx's ``auth_request``: ``proxy.nginxauth``): a
        plain idempotent request without a body, whose caller and route are cached and
        admitted, to a workload on this machine; else ``None``: the request goes to this
        proxy, which answers as always.  ``count``: counted here for the autoscaler (the
        fast path; nginx's access log counts what nginx serves).  No I/O."""
        if scope["method"] not in _IDEMPOTENT or not scope["path"].startswith(PREFIXES):
            return None
        target = parse_target(scope["path"])
        if target is None or not target.rest:
            return None
        plain, found = plain_credential(scope["headers"])
        if not plain:
            return None
        caller: Caller | None = None
        if found is not None:
            value, source = found
            caller, refresh = fast_caller(self._context, value, source, self._sessions)
            if caller is None:
                return None
            if refresh:
                self._in_background(("caller", value), self._refresh_caller(value, source))
        if target.kind == "user" and (caller is None or caller.name != target.owner):
            return None
        _hit, route, refresh = self._routes.cached(target)
        if route is None:
            return None
        if refresh:
            self._in_background(target, self._refresh(target))
        try:
            self._authorize(route, caller, found)
        except VirtuaiError:
            return None
        upstream = route.pick(self._suspects, count=count)
        if count:
            scope["virtuai.counted"] = True  # the ASGI path, if it takes it, counts it no more
        if upstream is None or self._peers.remote(upstream):
            return None
        return route, upstream

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
        # Counted here unless another server did (``peers``) or the fast path tried it.
        count = not forwarded(scope) and "virtuai.counted" not in scope
        try:
            route = await self._admit(connection, target, method)
            upstream = self._pick(scope, route, count=count)
            if upstream is None:
                route, upstream = await self._hold(scope, target, route, count=count)
            if upstream is None:
                await unavailable(send, connection, route)
                return
        except VirtuaiError as error:
            await refuse(send, connection, error, self._context)
            return
        if not target.rest:  # /user/alice/lab -> /user/alice/lab/ (Jupyter's base_url)
            await redirect(send, target.prefix + query(scope))
            return
        self.activity.touch(route.job_id)
        path = _raw_path(scope)
        head = RequestHead(scope, path[route.strip :])
        body = _body(receive) if head.has_body else None
        tried: set[Upstream] = set()
        while True:
            try:
                response = await self._send(scope, path, head, body, upstream, route)
                break
            except VirtuaiError as error:
                await refuse(send, connection, error, self._context)
                return
            except UpstreamError as error:
                log.info("proxy: %s:%s unreachable: %s", upstream.host, upstream.port, error)
                self._routes.forget(target)
                if route.service_id is None:
                    if wants_page(connection) and method in ("GET", "HEAD"):
                        # A browser that came while the job runs but its server does not
                        # listen yet (JupyterLab takes seconds): the page that reloads
                        # itself, not JSON.
                        await starting_page(send, "it does not answer yet")
                        return
                    await refuse(send, connection, NO_ANSWER, self._context)
                    return
                # A replica that failed: skipped until its next probe; the request goes to
                # another if it cannot have reached this one's application (or cannot
                # do harm twice), else held as a cold start until one is ready.
                self._suspects.mark(upstream, self._context.clock.now().timestamp())
                tried.add(upstream)
                if error.answered or (
                    error.sent and (body is not None or method not in _IDEMPOTENT)
                ):
                    # It may have acted on it: a 502 naming the replica, not a retry.
                    failed = broken_off(target, upstream, method)
                    await refuse(send, connection, failed, self._context)
                    return
                # The route came from the cache: the service may be gone, or have others.
                fresh = await anyio.to_thread.run_sync(self._routes.lookup, target)
                if fresh is None:
                    gone = NotFound(f"nothing is served at {target.prefix}")
                    await refuse(send, connection, gone, self._context)
                    return
                route = fresh
                upstream = self._pick(scope, route, count=False)
                if upstream is None or upstream in tried:
                    route, upstream = await self._hold(scope, target, route)
                    if upstream is None or upstream in tried:
                        await refuse(send, connection, NO_ANSWER, self._context)
                        return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": downstream_headers(response.headers),
                }
            )
            # What has come, as it comes (SSE, downloads); a body already complete goes in
            # the same message as its end, so a small answer costs one write, not two.
            while True:
                chunk, done = await response.next()
                await send({"type": "http.response.body", "body": chunk, "more_body": not done})
                if done:
                    return
                self.activity.touch(route.job_id)
        except UpstreamError as error:
            log.info("proxy: %s:%s broke off: %s", upstream.host, upstream.port, error)
            raise  # the answer has begun: the caller's connection is closed
        finally:
            response.close()

    def _pick(self, scope: Scope, route: Route, *, count: bool) -> Upstream | None:
        """``route.pick``; a request another server handed here goes to a replica of this
        machine's own (that server chose one here; balancing it again over every replica
        could pick a third machine's, and a handed request is never handed on)."""
        only = self._peers.local if forwarded(scope) else None
        return route.pick(self._suspects, count=count, only=only)

    async def _hold(
        self, scope: Scope, target: Target, route: Route, *, count: bool = True
    ) -> tuple[Route, Upstream | None]:
        """A service without a usable replica: the request waits for one (a cold start).
        ``count``: as for ``Route.pick`` (a request handed over by a peer is counted there)."""
        if route.service_id is None or self.services is None:
            return route, None
        route = await self.services.hold(target, route)
        # Counted again: the service's last request is now, not when the wait began (a
        # long cold start must not look idle to the autoscaler as it ends).
        return route, self._pick(scope, route, count=count)

    async def _send(
        self,
        scope: Scope,
        path: str,
        head: RequestHead,
        body: AsyncIterator[bytes] | None,
        upstream: Upstream,
        route: Route,
    ) -> Response:
        """Send the request to ``upstream``: the workload itself, or the server of its node
        when that is another machine (``proxy.peers``)."""
        kind = scope["method"] == "HEAD"
        if not self._peers.remote(upstream):
            data = head.to(upstream)
            return await self._pool.request(
                upstream.host, upstream.port, data, body, chunked=head.chunked, head_only=kind
            )
        if forwarded(scope) or not self._peers.port:
            raise Unavailable(
                f"it runs on node {upstream.node}, which this server does not forward to"
            )
        # The whole path: the node's server resolves the route (and strips it) again.
        headers = peer_headers(scope, self._peers.name)
        if head.chunked:
            headers.append(("transfer-encoding", "chunked"))
        data = head_of(scope, path, headers)
        return await self._pool.request(
            upstream.host, self._peers.port, data, body, chunked=head.chunked, head_only=kind
        )

    def _where(
        self, scope: Scope, connection: HTTPConnection, upstream: Upstream, route: Route
    ) -> tuple[str, list[tuple[str, str]]]:
        """The URL and headers of a WebSocket upstream: the workload itself, or the server
        of its node when that is another machine (``proxy.peers``)."""
        if not self._peers.remote(upstream):
            url = upstream.url("ws") + _raw_path(scope)[route.strip :]
            return url, upstream_headers(connection, scope, upstream, route, _NOT_UPSTREAM_WS)
        if forwarded(scope) or not self._peers.port:
            raise Unavailable(
                f"it runs on node {upstream.node}, which this server does not forward to"
            )
        url = self._peers.url(upstream, "ws") + _raw_path(scope)
        return url, peer_headers(scope, self._peers.name, websocket=True)

    # -- WebSocket -------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, target: Target) -> None:
        connection = HTTPConnection(scope)
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            route = await self._admit(connection, target, None)
            upstream = self._pick(scope, route, count=not forwarded(scope))
            if upstream is None:
                route, upstream = await self._hold(scope, target, route, count=not forwarded(scope))
            if upstream is None:
                raise Unavailable(f"not running yet: {route.state}, {route.reason}")
        except VirtuaiError as error:
            await refuse_websocket(scope, send, error)
            return
        try:
            url, headers = self._where(scope, connection, upstream, route)
        except VirtuaiError as error:
            await refuse_websocket(scope, send, error)
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
                await refuse_websocket(scope, send, Forbidden(f"the workload said {status}"))
            else:
                await refuse_websocket(scope, send, Unavailable("the workload does not answer"))
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
    return path + query(scope)


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("the caller went away before the end of its body")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
