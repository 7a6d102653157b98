"""Which address a task's own listening socket on a port has: ``virtuai port-forward``.

Local tasks share the host's network namespace, so "port 8000 on this machine"
may belong to anyone: another tenant's job, the server itself.  A forward to a
task's port therefore reaches it only if a process *of that task* holds the
listening socket: the kernel's socket tables (``/proc/net/tcp``, ``tcp6``: state,
bound address, inode) are matched against the file descriptors of the task's
processes (its cgroup, and the process tree below its main process).  The
answer is the address to connect to (the bound one, or loopback for a wildcard
bind), or ``None``.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import os
from collections.abc import Container, Iterable, Iterator
from pathlib import Path

import psutil

from virtuai.host import files

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


class Holder(enum.StrEnum):
    """Who listens on a task's port (``port_holder``): the readiness probe of a service's
    replica trusts an answer only from ``OWN``."""

    NONE = "none"  # nothing listens on the port
    OWN = "own"  # only processes of the task listen on it
    FOREIGN = "foreign"  # another process of the machine listens on it (too)


def task_listener(task_dir: Path, port: int, proc_root: Path = Path("/proc")) -> str | None:
    """The address to reach the task's listener on ``port``, or ``None`` if it has none."""
    listeners = dict(_listeners(proc_root, port))  # inode -> bound address
    if not listeners:
        return None
    for inode in _socket_inodes(_task_pids(task_dir), proc_root, listeners):
        return _connectable(listeners[inode])
    return None


def port_holder(task_dir: Path, port: int, proc_root: Path = Path("/proc")) -> Holder:
    """Whether the sockets listening on ``port`` (any address) are all the task's own.

    A process of the machine that binds a replica's port first (or beside it, on
    another address) would otherwise answer the readiness probe and be sent the
    proxy's traffic: it is ``FOREIGN`` as soon as one listener is not the task's."""
    listeners = dict(_listeners(proc_root, port))
    if not listeners:
        return Holder.NONE
    own = set(_socket_inodes(_task_pids(task_dir), proc_root, listeners))
    return Holder.OWN if own == set(listeners) else Holder.FOREIGN


def port_listened(port: int, proc_root: Path = Path("/proc")) -> bool:
    """Whether any process of the machine listens on ``port`` now (any address)."""
    return any(True for _ in _listeners(proc_root, port))


def _socket_inodes(pids: Iterable[int], proc_root: Path, wanted: Container[str]) -> Iterator[str]:
    """The inodes among ``wanted`` of the sockets open in ``pids``."""
    for pid in pids:
        fd_dir = proc_root / str(pid) / "fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    link = os.readlink(fd_dir / fd)
                    if link.startswith("socket:[") and link[8:-1] in wanted:
                        yield link[8:-1]


def _task_pids(task_dir: Path) -> set[int]:
    started = files.read_json(task_dir / files.STARTED) or {}
    pids: set[int] = set()
    for directory in started.get("cgroup_dirs") or ():
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(p) for p in (Path(directory) / "cgroup.procs").read_text().split())
    pid = started.get("pid")
    if isinstance(pid, int):
        with contextlib.suppress(psutil.Error):
            main = psutil.Process(pid)
            born = started.get("create_time")
            if born is None or abs(main.create_time() - float(born)) < 0.05:
                pids.add(pid)
                pids.update(p.pid for p in main.children(recursive=True))
    return pids


def _listeners(proc_root: Path, port: int) -> Iterable[tuple[str, str]]:
    """(inode, bound address) of the sockets listening on ``port``, IPv4 and IPv6."""
    for name, family in (("tcp", 4), ("tcp6", 6)):
        try:
            lines = (proc_root / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port:
                yield fields[9], _decode(address, family)


def _decode(hex_address: str, family: int) -> str:
    """``/proc/net/tcp`` writes addresses as host-order 32-bit words in hex."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)) if family == 6 else str(ipaddress.IPv4Address(words))


def _connectable(bound: str) -> str:
    address = ipaddress.ip_address(bound)
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "::1"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return bound
