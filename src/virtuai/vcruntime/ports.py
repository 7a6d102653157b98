"""TCP connections into a virtual node's network namespace: ``virtuai port-forward VC/NODE``.

A node has a network namespace of its own, and the host's firewall drops
connections the host opens towards a cluster's bridge (see ``firewall``), so
the server does not connect *to* the node: it opens a socket *inside* it.  A
socket belongs for life to the network namespace its creator was in, so a
short-lived thread enters the node's namespace (``setns``: per thread for
network namespaces), creates and connects the socket, and ends; the socket is
then used from anywhere, like any other.  The thread is never reused, so no
other code ever runs in the node's namespace by accident.

Inside the node the port is tried on loopback first (where a service bound to
``127.0.0.1`` or to every address answers), then on the node's private address
(a service bound to that address only).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Sequence

from virtuai.errors import Conflict, DriverError
from virtuai.vcruntime.nodes import InitRecord

CLONE_NEWNET = 0x40000000
ENTER_TIMEOUT_S = 10.0


def connect_in_node(
    record: InitRecord, hostname: str, addresses: Sequence[str], port: int, timeout: float
) -> socket.socket:
    """A connected TCP socket to ``port`` in the node whose init is ``record``.

    ``Conflict`` (field ``port``) when nothing listens there; ``DriverError`` when the
    node's namespace cannot be entered.
    """
    try:
        ns_fd = os.open(f"/proc/{record.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise Conflict(f"node {hostname} is not running ({exc.strerror})", field="node") from None
    result: list[socket.socket | BaseException] = []
    try:
        if not record.alive():  # the pid was recycled while we opened its namespace
            raise Conflict(f"node {hostname} is not running", field="node")
        thread = threading.Thread(
            target=_enter_and_connect,
            args=(ns_fd, addresses, port, timeout, result),
            name=f"connect-{hostname}",
            daemon=True,
        )
        thread.start()
        thread.join(ENTER_TIMEOUT_S + timeout * len(addresses))
    finally:
        os.close(ns_fd)
    if not result:
        raise DriverError(f"connecting to port {port} of node {hostname} did not finish")
    outcome = result[0]
    if isinstance(outcome, socket.socket):
        return outcome
    if isinstance(outcome, DriverError):
        raise outcome
    raise Conflict(
        f"nothing listens on port {port} of node {hostname} ({_reason(outcome)})", field="port"
    )


def _enter_and_connect(
    ns_fd: int,
    addresses: Sequence[str],
    port: int,
    timeout: float,
    result: list[socket.socket | BaseException],
) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(ns_fd, CLONE_NEWNET) != 0:
        error = os.strerror(ctypes.get_errno())
        result.append(DriverError(f"cannot enter the node's network namespace: {error}"))
        return
    last: BaseException = ConnectionRefusedError("connection refused")
    for address in addresses:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.settimeout(None)
        result.append(sock)
        return
    result.append(last)
    # The thread ends here, still in the node's namespace: it is never reused.


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError | socket.timeout):
        return "no answer"
    with contextlib.suppress(AttributeError):
        if error.strerror:  # type: ignore[attr-defined]
            return str(error.strerror)  # type: ignore[attr-defined]
    return str(error)
