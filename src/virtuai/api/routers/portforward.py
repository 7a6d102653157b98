"""``virtuai port-forward``: one WebSocket per forwarded TCP connection.

``/api/v1/jobs/{id}/port-forward/ws?port=P[&task=I]`` and
``/api/v1/vcs/{name}/port-forward/ws?port=P[&node=I][&tenant=T]``; the protocol is
``virtuai.portwire``'s.  The caller is authenticated (Bearer header only, as for
``vc exec``: a cookie would allow cross-site WebSocket hijacking), authorised, and
the TCP connection to the port made *before* the handshake is accepted, so every
refusal -- 401, 404 for another tenant's job, 409 for a job that has ended or a
port nothing listens on, 422 for a bad port -- is a plain HTTP answer.

Bytes are moved with asyncio streams on the event loop: a write to the port
waits for its buffer to drain before the next message is read, so a slow
service slows the client down instead of filling the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

import websockets
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from virtuai import errors, portwire
from virtuai.api.context import ApiContext
from virtuai.api.deps import websocket_caller
from virtuai.api.errors import status_of
from virtuai.services import portforward as service
from virtuai.store.db import read_transaction

router = APIRouter(tags=["port forwarding"])
log = logging.getLogger(__name__)


@router.websocket("/api/v1/jobs/{job_id}/port-forward/ws")
async def job_port_forward(
    websocket: WebSocket, job_id: str, port: str | None = None, task: str | None = None
) -> None:
    """A TCP connection to a port a task of the job listens on."""
    context: ApiContext = websocket.app.state.context

    def resolve() -> service.ForwardTarget | service.PeerTarget:
        caller = websocket_caller(websocket, context)
        number = service.parse_index(job_id, "id")
        index = service.parse_index(task, "task")
        wanted = service.parse_port(port)
        with read_transaction(context.sessions) as session:
            return service.job_target(
                session,
                caller,
                number,
                index,
                wanted,
                context.drivers,
                context.vcs,
                peer_port=context.peer_port,
                forwarded=service.FORWARDED_BY in websocket.headers,
            )

    await _forward(websocket, resolve)


@router.websocket("/api/v1/vcs/{name}/port-forward/ws")
async def node_port_forward(
    websocket: WebSocket,
    name: str,
    port: str | None = None,
    node: str | None = None,
    tenant: str | None = None,
) -> None:
    """A TCP connection to a port inside a node of a running virtual cluster."""
    context: ApiContext = websocket.app.state.context

    def resolve() -> service.ForwardTarget:
        caller = websocket_caller(websocket, context)
        index = service.parse_index(node, "node")
        wanted = service.parse_port(port)
        with read_transaction(context.sessions) as session:
            return service.node_target(session, caller, name, tenant, index, wanted, context.vcs)

    await _forward(websocket, resolve)


async def _forward(
    websocket: WebSocket,
    resolve: Callable[[], service.ForwardTarget | service.PeerTarget],
) -> None:
    def connect() -> tuple[service.ForwardTarget | service.PeerTarget, socket.socket | None]:
        target = resolve()  # the database is read here, and released before connecting
        if isinstance(target, service.PeerTarget):
            return target, None
        return target, target.connect()

    try:
        target, sock = await run_in_threadpool(connect)
    except errors.VirtuaiError as exc:
        await _deny(websocket, exc)
        return
    if sock is None:
        assert isinstance(target, service.PeerTarget)
        await _hand_over(websocket, target)
        return
    try:
        await websocket.accept()
        await _relay(websocket, sock)
    except WebSocketDisconnect:
        pass  # the client went away: the connection to the port is closed below
    except OSError as exc:  # the port's side reset the connection
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            message = f"the connection to {target.description} failed: {exc.strerror or exc}"
            await websocket.send_bytes(portwire.error_frame(message))
    finally:
        sock.close()
        with contextlib.suppress(RuntimeError):
            await websocket.close()


async def _deny(websocket: WebSocket, exc: errors.VirtuaiError) -> None:
    await websocket.send_denial_response(JSONResponse(exc.to_dict(), status_code=status_of(exc)))


async def _relay(websocket: WebSocket, sock: socket.socket) -> None:
    """Both directions, each until its end (half-close), then return."""
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=portwire.CHUNK)

    async def from_port() -> None:
        while data := await reader.read(portwire.CHUNK):
            await websocket.send_bytes(portwire.frame(portwire.DATA, data))
        await websocket.send_bytes(portwire.frame(portwire.EOF))

    async def to_port() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            data = message.get("bytes")
            if not data:
                continue  # text or empty messages mean nothing here
            channel, payload = portwire.split(data)
            if channel == portwire.DATA and payload:
                writer.write(payload)
                await writer.drain()
            elif channel == portwire.EOF:
                if writer.can_write_eof():
                    writer.write_eof()
                return

    tasks = [asyncio.create_task(from_port()), asyncio.create_task(to_port())]
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()  # the first failure (a reset, a disconnect) ends both
    finally:
        for running in tasks:
            running.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()


async def _hand_over(websocket: WebSocket, target: service.PeerTarget) -> None:
    """The task is on another machine: the same request to its node's server, with the
    caller's Bearer credential (that server authorises and connects again); its refusal
    is ours, then messages pass both ways unchanged (they are ``portwire`` frames)."""
    raw = websocket.scope.get("raw_path") or websocket.scope["path"].encode()
    query = websocket.scope.get("query_string", b"")
    url = target.url + raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    headers = [
        ("Authorization", websocket.headers.get("authorization", "")),
        (service.FORWARDED_BY, "1"),
    ]
    try:
        peer = await websockets.connect(
            url,
            additional_headers=headers,
            compression=None,
            max_size=None,
            ping_interval=None,
            open_timeout=service.CONNECT_TIMEOUT_S * 2,
            proxy=None,
            user_agent_header=None,
        )
    except websockets.exceptions.InvalidStatus as exc:
        answer = exc.response
        await websocket.send_denial_response(
            Response(
                bytes(answer.body or b""),
                status_code=answer.status_code,
                media_type=answer.headers.get("content-type", "application/json"),
            )
        )
        return
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        await _deny(
            websocket,
            errors.Unavailable(f"cannot reach the server of node {target.node}: {exc}"),
        )
        return
    try:
        await websocket.accept()

        async def to_peer() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes"):
                    await peer.send(message["bytes"])

        async def from_peer() -> None:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                async for data in peer:
                    if isinstance(data, bytes):
                        await websocket.send_bytes(data)

        tasks = [asyncio.create_task(to_peer()), asyncio.create_task(from_peer())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for running in tasks:
                running.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await peer.close()
        with contextlib.suppress(RuntimeError):
            await websocket.close()
