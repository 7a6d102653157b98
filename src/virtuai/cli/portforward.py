"""``virtuai port-forward TARGET LOCAL:REMOTE``: a local port tunnelled to a task's or node's port.

The CLI listens on ``127.0.0.1:LOCAL`` (``--address`` to change); every accepted
connection gets a WebSocket of its own to the server (``virtuai.portwire``), which
connects to the port and relays.  Two threads per connection move the bytes, one
per direction; a half-close travels as ``EOF`` so request/response protocols that
shut down their sending side (``nc -N``, HTTP/1.0 clients) work.  A refusal for
one connection (nothing listens on the port yet) is printed and the forward goes
on; a refusal saying the target is gone (the job ended, 404) ends it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode, urlsplit, urlunsplit

import typer
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from virtuai import __version__, portwire
from virtuai.cli.client import ApiError, Client, ServerUnreachableError, segment
from virtuai.cli.config import Connection, load_connection
from virtuai.cli.vcexec import OPEN_TIMEOUT_S, refusal

# Refusals that mean the target itself is gone or wrong: the forward stops.
FATAL_FIELDS = frozenset({"id", "name", "node", "task", "tenant"})


@dataclass(frozen=True, slots=True)
class Target:
    job: int | None = None  # a job's task ...
    task: int = 0
    vc: str | None = None  # ... or a virtual cluster's node
    node: int = 0
    tenant: str | None = None

    def describe(self) -> str:
        if self.vc is not None:
            return f"node {self.node} of virtual cluster {self.vc}"
        return f"job {self.job}" + (f" (task {self.task})" if self.task else "")

    def path(self) -> tuple[str, dict[str, str | int | None]]:
        if self.vc is not None:
            path = f"/api/v1/vcs/{segment(self.vc)}/port-forward/ws"
            return path, {"node": self.node, "tenant": self.tenant}
        return f"/api/v1/jobs/{self.job}/port-forward/ws", {"task": self.task}


def parse_target(text: str, task: int, tenant: str | None) -> Target:
    """``12`` (a job) or ``VC/NODE`` (``lab/1`` or ``lab/lab-1``)."""
    if "/" not in text:
        if not text.isdigit():
            raise ApiError(f"{text!r}: give a job id or VC/NODE", field="TARGET")
        return Target(job=int(text), task=task)
    vc, _, node = text.partition("/")
    index = node.removeprefix(f"{vc}-")
    if not vc or not index.isdigit():
        raise ApiError(f"{text!r}: give VC/NODE, e.g. lab/0 or lab/lab-0", field="TARGET")
    return Target(vc=vc, node=int(index), tenant=tenant)


def parse_ports(text: str) -> tuple[int, int]:
    """``LOCAL:REMOTE``, or ``PORT`` for both; LOCAL ``0`` picks a free port."""
    local, sep, remote = text.partition(":")
    if not sep:
        remote = local
    try:
        ports = int(local or "0"), int(remote)
    except ValueError:
        raise ApiError(f"{text!r}: give LOCAL:REMOTE, e.g. 8080:80", field="PORTS") from None
    if not (0 <= ports[0] <= 65535 and 1 <= ports[1] <= 65535):
        raise ApiError(f"{text!r}: ports go from 1 to 65535", field="PORTS")
    return ports


class Forwarder:
    """Listens locally and tunnels each connection (``serve()``) until stopped or the target
    is gone."""

    def __init__(
        self, connection: Connection, target: Target, remote: int, listener: socket.socket
    ) -> None:
        self.connection = connection
        self.target = target
        self.remote = remote
        self.listener = listener
        self.fatal: ApiError | None = None
        self._stop = threading.Event()

    def serve(self) -> None:
        self.listener.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn.settimeout(None)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        if self.fatal is not None:
            raise self.fatal

    def stop(self) -> None:
        self._stop.set()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                ws = self._open()
            except ApiError as exc:
                print(f"virtuai: connection refused: {exc.message}", file=sys.stderr, flush=True)
                if exc.status in (401, 403, 404) or (
                    exc.status == 409 and exc.field in FATAL_FIELDS
                ):
                    self.fatal = exc
                    self.stop()
                return
            with ws:
                sender = threading.Thread(target=_send_local, args=(conn, ws), daemon=True)
                sender.start()
                _receive_remote(ws, conn)
            with contextlib.suppress(OSError):  # wakes the sender if it still waits for input
                conn.shutdown(socket.SHUT_RDWR)
            sender.join(timeout=1.0)

    def _open(self) -> ClientConnection:
        path, params = self.target.path()
        query = urlencode(
            {"port": self.remote, **{k: v for k, v in params.items() if v is not None}}
        )
        base = urlsplit(self.connection.url)
        scheme = "wss" if base.scheme == "https" else "ws"
        uri = urlunsplit((scheme, base.netloc, base.path.rstrip("/") + path, query, ""))
        headers = (
            {"Authorization": f"Bearer {self.connection.token}"} if self.connection.token else {}
        )
        try:
            return connect(
                uri,
                additional_headers=headers,
                user_agent_header=f"virtuai-cli/{__version__}",
                compression=None,
                open_timeout=OPEN_TIMEOUT_S,
                max_size=portwire.MAX_MESSAGE,
            )
        except InvalidStatus as exc:
            raise refusal(self.connection, exc) from None
        except (OSError, TimeoutError) as exc:
            raise ServerUnreachableError(
                f"cannot reach the virtuai server at {self.connection.url} ({exc})",
                code="unreachable",
            ) from None
        except InvalidHandshake as exc:
            raise ApiError(
                f"the server did not open a WebSocket: {exc}", code="bad_response"
            ) from None


def _send_local(conn: socket.socket, ws: ClientConnection) -> None:
    """Local bytes to the server, then EOF when the local side shuts its sending half."""
    with contextlib.suppress(ConnectionClosed, OSError):
        while data := conn.recv(portwire.CHUNK):
            ws.send(portwire.frame(portwire.DATA, data))
        ws.send(portwire.frame(portwire.EOF))


def _receive_remote(ws: ClientConnection, conn: socket.socket) -> None:
    """The port's bytes to the local connection, until the server closes the WebSocket."""
    with contextlib.suppress(ConnectionClosed, OSError):
        for message in ws:
            if not isinstance(message, bytes) or not message:
                continue
            channel, payload = portwire.split(message)
            if channel == portwire.DATA:
                conn.sendall(payload)
            elif channel == portwire.EOF:
                conn.shutdown(socket.SHUT_WR)
            elif channel == portwire.ERROR:
                error = json.loads(payload or b"{}").get("message", "the connection failed")
                print(f"virtuai: {error}", file=sys.stderr, flush=True)
                break


def register(app: typer.Typer, panel: str) -> None:
    app.command("port-forward", rich_help_panel=panel)(port_forward)


def port_forward(
    *,
    target: Annotated[
        str,
        typer.Argument(
            help="A job id, or VC/NODE (lab/0) for a virtual cluster's node.",
            show_default=False,
            metavar="JOB|VC/NODE",
        ),
    ],
    ports: Annotated[
        str,
        typer.Argument(
            help="LOCAL:REMOTE (8080:80), or PORT for both; LOCAL 0 picks one.",
            show_default=False,
            metavar="LOCAL:REMOTE",
        ),
    ],
    task: Annotated[int, typer.Option(help="The job's task whose port to reach.", min=0)] = 0,
    tenant: Annotated[str | None, typer.Option(help="The cluster's tenant (for VC/NODE).")] = None,
    address: Annotated[str, typer.Option(help="Local address to listen on.")] = "127.0.0.1",
) -> None:
    """Forward a local port to a port of a running job's task or of a virtual node.

    `virtuai port-forward 12 8080:8000` listens on 127.0.0.1:8080; every connection
    to it goes through the server to port 8000 of job 12's task 0 (as the job's
    tenant may).  `virtuai port-forward lab/1 2222:22` reaches node 1 of cluster
    lab.  Ctrl-C stops it.
    """  # fmt: skip
    where = parse_target(target, task, tenant)
    local, remote = parse_ports(ports)
    connection = load_connection()
    _check_running(connection, where)
    listener = socket.create_server((address, local), family=_family(address), backlog=128)
    with listener:
        bound = listener.getsockname()[1]
        typer.echo(
            f"Forwarding from {address}:{bound} to port {remote} of {where.describe()} "
            "(Ctrl-C to stop)"
        )
        forwarder = Forwarder(connection, where, remote, listener)
        try:
            forwarder.serve()
        except KeyboardInterrupt:
            forwarder.stop()


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _check_running(connection: Connection, target: Target) -> None:
    """Fail at once, with the server's words, when the target does not exist or does not run."""
    with Client(connection) as client:
        if target.vc is not None:
            params = {"tenant": target.tenant} if target.tenant else None
            vc = client.get_object(f"/api/v1/vcs/{segment(target.vc)}", params)
            state = str(vc.get("state", ""))
            if state != "running":
                raise ApiError(
                    f"virtual cluster {target.vc} is {state}, not running", field="TARGET"
                )
            return
        job = client.get_object(f"/api/v1/jobs/{target.job}")
        state = str(job.get("state", ""))
        if state in ("succeeded", "failed", "cancelled", "timed_out", "preempted"):
            raise ApiError(f"job {target.job} has ended ({state})", field="TARGET")
        if state != "running":
            raise ApiError(f"job {target.job} is {state}, not running", field="TARGET")
