"""``/api/v1/vcs/{name}/exec/ws``: ``virtuai vc exec`` with standard input and a terminal.

The protocol is ``virtuai.execwire``'s.  The caller is authenticated and the node
found *before* the handshake is accepted: a refusal is an ordinary HTTP answer
(401, 404 for another tenant's cluster, 409 when not running) with the API's
``{code, message, field}`` body.  Why a WebSocket: standard input is streamed,
binary-safe and without a size limit (the 1 MiB request body limit applies to
HTTP bodies only), and input, output and resizes flow both ways at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from virtuai import errors, execwire
from virtuai.api.context import ApiContext
from virtuai.api.deps import websocket_caller
from virtuai.api.errors import status_of
from virtuai.api.schemas.vclusters import VcExecStart
from virtuai.services import vclusters as service
from virtuai.services.vcexec import OUTPUT_GRACE_S, ExecOptions, NodeCommand
from virtuai.store.db import transaction

router = APIRouter(prefix="/api/v1/vcs", tags=["virtual clusters"])
log = logging.getLogger(__name__)
START_TIMEOUT_S = 30.0  # for the client's start message after the handshake


@router.websocket("/{name}/exec/ws")
async def exec_ws(
    websocket: WebSocket, name: str, tenant: str | None = None, node: int = 0
) -> None:
    """Run a command in a node as the tenant's unprivileged user, in ``/shared``."""
    context: ApiContext = websocket.app.state.context
    try:
        target = await run_in_threadpool(_target, websocket, context, name, tenant, node)
    except errors.VirtuaiError as exc:
        await websocket.send_denial_response(
            JSONResponse(exc.to_dict(), status_code=status_of(exc))
        )
        return
    await websocket.accept()
    try:
        await _session(websocket, context, target)
    except WebSocketDisconnect:
        pass  # the client went away: its command was killed
    except errors.VirtuaiError as exc:
        await _send_error(websocket, dict(exc.to_dict()), status_of(exc))
    finally:
        with contextlib.suppress(RuntimeError):
            await websocket.close()


def _target(
    websocket: WebSocket, context: ApiContext, name: str, tenant: str | None, node: int
) -> service.ExecTarget:
    caller = websocket_caller(websocket, context)
    with transaction(context.sessions) as session:
        return service.exec_target(session, caller, name, tenant, node, context.vcs)


async def _session(websocket: WebSocket, context: ApiContext, target: service.ExecTarget) -> None:
    try:
        text = await asyncio.wait_for(websocket.receive_text(), START_TIMEOUT_S)
        start = VcExecStart.model_validate_json(text)
    except (TimeoutError, KeyError):  # KeyError: a binary message came first
        raise errors.InvalidRequest("no start message came", field="command") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise errors.InvalidRequest(f"{field}: {first['msg']}", field=field) from None
    limit = context.vc_options.exec_timeout_s
    timeout = min(start.timeout or limit, limit)
    options = ExecOptions(
        start.command, stdin=start.stdin, tty=start.tty, rows=start.rows, cols=start.cols,
        term=start.term,
    )  # fmt: skip
    runtime = context.vcs.require()
    command = await run_in_threadpool(NodeCommand.start, runtime, target, options)
    try:
        code, message = await _bridge(websocket, command, timeout)
    finally:
        await run_in_threadpool(command.close)
    await websocket.send_bytes(
        execwire.json_frame(execwire.STATUS, {"exit_code": code, "message": message})
    )


async def _bridge(websocket: WebSocket, command: NodeCommand, timeout: float) -> tuple[int, str]:
    """Output to the client, input to the command, until it ends; its exit code."""
    sending = asyncio.Lock()

    async def pump(fd: int, channel: int) -> None:
        while data := await command.read(fd):
            async with sending:
                await websocket.send_bytes(execwire.frame(channel, data))

    pumps = [asyncio.create_task(pump(fd, channel)) for fd, channel in command.outputs]
    feeder = asyncio.create_task(_feed(websocket, command))
    exited = asyncio.create_task(command.wait())
    try:
        done, _ = await asyncio.wait(
            [exited, feeder], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if feeder in done and exited not in done:
            feeder.result()  # raises WebSocketDisconnect: the client is gone
        if exited not in done:
            command.kill()
            code = await exited
            message = f"killed after {timeout:g}s"
        else:
            code, message = exited.result(), ""
        # The rest of the output; a child it left behind may hold the pipes open.
        await asyncio.wait(pumps, timeout=OUTPUT_GRACE_S)
        for pumped in pumps:
            if pumped.done() and (error := pumped.exception()) is not None:
                raise error
        return code, message
    finally:
        for task in (*pumps, feeder, exited):
            task.cancel()
        await asyncio.gather(*pumps, feeder, exited, return_exceptions=True)


async def _feed(websocket: WebSocket, command: NodeCommand) -> None:
    """Standard input and resizes from the client, until it closes stdin (then idle)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            command.kill()
            raise WebSocketDisconnect(message.get("code", 1000))
        data = message.get("bytes")
        if not data:
            continue  # text or empty messages mean nothing here
        channel, payload = execwire.split(data)
        if channel == execwire.STDIN:
            if payload:
                await command.write(payload)
            else:
                command.close_stdin()
        elif channel == execwire.RESIZE:
            with contextlib.suppress(ValueError, TypeError, KeyError, OSError):
                size = json.loads(payload)
                command.resize(
                    max(1, min(int(size["rows"]), 10_000)), max(1, min(int(size["cols"]), 10_000))
                )


async def _send_error(websocket: WebSocket, body: Mapping[str, object], status: int) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.send_bytes(
            execwire.json_frame(execwire.STATUS, {"error": body, "status": status})
        )
