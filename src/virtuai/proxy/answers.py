"""The proxy's own answers: refusals (401 or the sign-in redirect, 403, 404, 503 with
``Retry-After``, 502 for a request a service's replica broke off), the page that reloads
itself while a workload starts, redirects, and a WebSocket handshake's refusal as a plain
HTTP answer."""

from __future__ import annotations

import json
from urllib.parse import quote

from starlette.requests import HTTPConnection
from starlette.types import Scope, Send

from virtuai.api.context import ApiContext
from virtuai.control.notebooks import Upstream
from virtuai.errors import Unavailable, UpstreamFailed, VirtuaiError
from virtuai.proxy.routes import Route, Target


def query(scope: Scope) -> str:
    raw: bytes = scope.get("query_string", b"")
    return "?" + raw.decode("latin-1") if raw else ""


def wants_page(connection: HTTPConnection) -> bool:
    return "text/html" in connection.headers.get("accept", "")


def error_body(error: VirtuaiError) -> bytes:
    return json.dumps(error.to_dict()).encode()


NO_ANSWER = Unavailable("the workload does not answer (yet)")
STATUS = {
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "unavailable": 503,
    "upstream_failed": 502,
}


def broken_off(target: Target, upstream: Upstream, method: str) -> UpstreamFailed:
    """A replica crashed (or closed the connection) after the request reached it, and the
    request is not one to send twice (a body, or a method that is not idempotent): as
    nginx and Envoy do, it is not retried, since the replica may have acted on it."""
    replica = f"replica job {upstream.job_id}" if upstream.job_id else "a replica"
    where = upstream.node or f"{upstream.host}:{upstream.port}"
    return UpstreamFailed(
        f"service {target.owner}/{target.name}: {replica} (on {where}) broke off this "
        f"{method} request after it reached it (it crashed or closed the connection); the "
        "request is not sent again, as the replica may have acted on it: retry it if it "
        "is safe to repeat"
    )


async def refuse(
    send: Send, connection: HTTPConnection, error: VirtuaiError, context: ApiContext
) -> None:
    status = STATUS.get(error.code, 400)
    if status == 401 and wants_page(connection) and connection.scope["method"] in ("GET", "HEAD"):
        path = connection.scope["path"] + query(connection.scope)
        login = "/api/v1/session/oidc/login" if context.browser.oidc is not None else "/"
        await redirect(send, f"{login}?next={quote(path, safe='')}")
        return
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status == 503:
        headers.append((b"retry-after", b"2"))
    await respond(send, status, headers, error_body(error))


async def unavailable(send: Send, connection: HTTPConnection, route: Route) -> None:
    message = f"it is {route.state}: {route.reason}" if route.reason else f"it is {route.state}"
    error = Unavailable(f"not running yet ({message}); try again in a moment")
    if wants_page(connection):
        await starting_page(send, message)
        return
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"2")]
    await respond(send, 503, headers, error_body(error))


async def starting_page(send: Send, message: str) -> None:
    page = (
        "<!doctype html><meta charset='utf-8'><meta http-equiv='refresh' content='2'>"
        f"<title>Starting</title><p>It is starting ({html(message)}).</p>"
    ).encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"retry-after", b"2")]
    await respond(send, 503, headers, page)


async def redirect(send: Send, location: str) -> None:
    await respond(send, 302, [(b"location", location.encode("latin-1"))], b"")


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def refuse_websocket(scope: Scope, send: Send, error: VirtuaiError) -> None:
    """A plain HTTP answer to the handshake when the server can give one (uvicorn can)."""
    status = STATUS.get(error.code, 400)
    if "websocket.http.response" in scope.get("extensions", {}):
        body = error_body(error)
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


def html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
