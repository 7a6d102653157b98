"""Small programs run inside nodes (python3 from the image) and helpers around them."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from virtuai.vcruntime import VcRuntime, VcSpec

MakeSpec = Callable[..., VcSpec]

# Listens on PORT, answers every connection with what it received, prefixed; prints
# "ready" once listening (so the test never sleeps for a fixed time).
ECHO_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"echo:" + c.recv(100))
    c.close()
"""

# Connects to HOST PORT; prints the answer, or the kind of failure (never raises).
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.sendall(b"hi")
    print(c.recv(100).decode())
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(f"error:{exc.errno}")
"""

ENETUNREACH = 101
ECONNREFUSED = 111


@contextmanager
def echo_server(runtime: VcRuntime, vc_id: str, index: int, port: int) -> Iterator[None]:
    proc = runtime.exec(vc_id, index, ["python3", "-c", ECHO_SERVER, str(port)])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"ready\n", (line, proc.stderr.read() if proc.stderr else b"")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def connect(
    runtime: VcRuntime, vc_id: str, index: int, host: str, port: int, timeout: float = 0.5
) -> str:
    result = runtime.run(vc_id, index, ["python3", "-c", CLIENT, host, str(port), str(timeout)])
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


@contextmanager
def host_server(address: str) -> Iterator[int]:
    """A TCP server in the host's own namespace; yields its port."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"host")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def sh(runtime: VcRuntime, vc_id: str, index: int, script: str, user: str | None = None) -> str:
    result = runtime.run(vc_id, index, ["sh", "-c", script], user=user)
    assert result.returncode == 0, (script, result.stderr.decode())
    return result.stdout.decode()


def host_ip_netns_exists(name: str) -> bool:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return any(line.split()[0] == name for line in out.splitlines() if line.strip())


def cgroup_file(runtime: VcRuntime, vc_id: str, index: int, controller: str, name: str) -> Path:
    """A file of the node's own cgroup (``controller`` picks the v1 hierarchy)."""
    layout = runtime.cgroups.layout
    key = runtime.names(vc_id).cgroup(index)
    root = layout.roots["unified"] if layout.version == 2 else layout.roots[controller]
    return Path(root) / layout.parent / key / name


def cpu_quota_us(runtime: VcRuntime, vc_id: str, index: int) -> int:
    if runtime.cgroups.layout.version == 2:
        return int(cgroup_file(runtime, vc_id, index, "cpu", "cpu.max").read_text().split()[0])
    return int(cgroup_file(runtime, vc_id, index, "cpu", "cpu.cfs_quota_us").read_text())


def memory_limit(runtime: VcRuntime, vc_id: str, index: int) -> int:
    if runtime.cgroups.layout.version == 2:
        return int(cgroup_file(runtime, vc_id, index, "memory", "memory.max").read_text())
    return int(cgroup_file(runtime, vc_id, index, "memory", "memory.limit_in_bytes").read_text())
