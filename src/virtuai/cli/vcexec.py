"""The client side of ``virtuai vc exec``: a WebSocket to ``/api/v1/vcs/{name}/exec/ws``.

The main thread writes what the server sends (stdout, stderr, then the exit
status); a second thread reads this process's standard input and sends it, with
the terminal's size whenever it changes (SIGWINCH).  With a terminal the local one
is put in raw mode for the session (keys go to the remote terminal as typed, ^C
included) and restored at the end, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import sys
import termios
import threading
import tty as ttymod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from virtuai import __version__, execwire
from virtuai.cli.client import ApiError, ServerUnreachableError, segment
from virtuai.cli.config import Connection, missing_token_hint

OPEN_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ExecCall:
    name: str
    command: list[str]
    node: int = 0
    tenant: str | None = None
    timeout: int | None = None
    stdin: int | None = None  # the file descriptor of the standard input to send
    tty: bool = False  # a pseudo-terminal in the node


def run(connection: Connection, call: ExecCall) -> tuple[int, str]:
    """Run the command; its exit code and the server's message (killed at the timeout...)."""
    with _connected(connection, call) as ws:
        rows, cols = _size()
        start: dict[str, Any] = {
            "command": call.command,
            "timeout": call.timeout,
            "stdin": call.stdin is not None,
            "tty": call.tty,
            "rows": rows,
            "cols": cols,
            "term": os.environ.get("TERM") or "xterm",
        }
        ws.send(json.dumps(start))
        raw = call.tty and call.stdin is not None and os.isatty(call.stdin)
        with _raw_terminal(call.stdin if raw else None), _Input(ws, call.stdin, call.tty):
            return _receive(ws)


def stdin_fd() -> int | None:
    """The standard input's file descriptor; ``None`` when it is closed or has none."""
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both
        return None
    return fd


@contextlib.contextmanager
def _connected(connection: Connection, call: ExecCall) -> Iterator[ClientConnection]:
    params = {"tenant": call.tenant, "node": call.node}
    query = urlencode({k: v for k, v in params.items() if v is not None})
    base = urlsplit(connection.url)
    scheme = "wss" if base.scheme == "https" else "ws"
    path = f"{base.path.rstrip('/')}/api/v1/vcs/{segment(call.name)}/exec/ws"
    uri = urlunsplit((scheme, base.netloc, path, query, ""))
    headers = {"Authorization": f"Bearer {connection.token}"} if connection.token else {}
    try:
        ws = connect(
            uri,
            additional_headers=headers,
            user_agent_header=f"virtuai-cli/{__version__}",
            compression=None,  # files piped through are often compressed already
            open_timeout=OPEN_TIMEOUT_S,
            max_size=execwire.MAX_MESSAGE,
        )
    except InvalidStatus as exc:
        raise refusal(connection, exc) from None
    except (OSError, TimeoutError) as exc:
        raise ServerUnreachableError(
            f"cannot reach the virtuai server at {connection.url}: is `virtuai up` running? "
            f"({exc})",
            code="unreachable",
        ) from None
    except InvalidHandshake as exc:
        raise ApiError(
            f"the server at {connection.url} did not open a WebSocket for exec: {exc}",
            code="bad_response",
        ) from None
    with ws:
        yield ws


def refusal(connection: Connection, exc: InvalidStatus) -> ApiError:
    status = exc.response.status_code
    try:
        body = json.loads(exc.response.body or b"")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ApiError(f"the server refused exec (HTTP {status})", status=status)
    message = str(body.get("message") or f"HTTP {status}")
    if status == 401 and not connection.token:
        message = f"{message} ({missing_token_hint(connection)})"
    field = body.get("field")
    return ApiError(
        message,
        code=str(body.get("code") or "error"),
        field=str(field) if field else None,
        status=status,
    )


def _receive(ws: ClientConnection) -> tuple[int, str]:
    try:
        for message in ws:
            if not isinstance(message, bytes) or not message:
                continue
            channel, payload = execwire.split(message)
            if channel in (execwire.STDOUT, execwire.STDERR):
                stream = sys.stdout if channel == execwire.STDOUT else sys.stderr
                stream.buffer.write(payload)
                stream.buffer.flush()
            elif channel == execwire.STATUS:
                return _status(json.loads(payload))
    except ConnectionClosed:
        pass
    raise ApiError("the server stopped answering before the command ended", code="truncated")


def _status(status: dict[str, Any]) -> tuple[int, str]:
    error = status.get("error")
    if isinstance(error, dict):
        field = error.get("field")
        raise ApiError(
            str(error.get("message") or "exec failed"),
            code=str(error.get("code") or "error"),
            field=str(field) if field else None,
            status=int(status.get("status") or 500),
        )
    return int(status["exit_code"]), str(status.get("message") or "")


def _size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return size.lines, size.columns


@contextlib.contextmanager
def _raw_terminal(fd: int | None) -> Iterator[None]:
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    ttymod.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _Input:
    """Sends standard input (and, with a terminal, its size) while the command runs."""

    def __init__(self, ws: ClientConnection, stdin: int | None, tty: bool) -> None:
        self.ws = ws
        self.stdin = stdin
        self.tty = tty
        self.stop_r, self.stop_w = os.pipe()
        self.winch_r, self.winch_w = os.pipe()
        self.thread = threading.Thread(target=self._run, name="vc-exec-stdin", daemon=True)
        self.previous: Any = None

    def __enter__(self) -> _Input:
        if self.tty and threading.current_thread() is threading.main_thread():
            os.set_blocking(self.winch_w, False)
            self.previous = signal.signal(signal.SIGWINCH, self._winch)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGWINCH, self.previous)
        os.write(self.stop_w, b"x")
        self.thread.join(timeout=1.0)
        if not self.thread.is_alive():  # else it may still select on them
            for fd in (self.stop_r, self.stop_w, self.winch_r, self.winch_w):
                os.close(fd)

    def _winch(self, _signo: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            os.write(self.winch_w, b"x")

    def _run(self) -> None:
        watched = [self.stop_r, self.winch_r, *([self.stdin] if self.stdin is not None else [])]
        with contextlib.suppress(ConnectionClosed, OSError):
            while True:
                ready = select.select(watched, [], [])[0]
                if self.stop_r in ready:
                    return
                if self.winch_r in ready:
                    os.read(self.winch_r, 64)
                    rows, cols = _size()
                    self.ws.send(execwire.json_frame(execwire.RESIZE, {"rows": rows, "cols": cols}))
                if self.stdin is not None and self.stdin in ready:
                    data = os.read(self.stdin, execwire.CHUNK)
                    self.ws.send(execwire.frame(execwire.STDIN, data))  # b"": EOF
                    if not data:
                        watched.remove(self.stdin)
