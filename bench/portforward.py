"""`virtuai port-forward` against direct access to the same port, in the same run.

Run: ``.venv/bin/python bench/portforward.py`` (``--mib N`` changes the download size).

It starts ``virtuai up`` in a temporary state directory, submits a job whose task
serves on a port of 127.0.0.1 (a download of ``--mib`` MiB, and an echo), and
measures the same three things directly and through ``virtuai port-forward``
(the real CLI, one WebSocket per connection through the server):

- download throughput (MiB/s, best of 3);
- a new connection plus its first 100-byte echo (ms, median and p99 of 50):
  through the forward that includes the WebSocket handshake, authorisation and
  the server's check that the port belongs to the task;
- a 100-byte echo on an open connection (ms, median of 500).

The last line is ``forward_mib_s=F direct_mib_s=D throughput_ratio=R
connect_p50_ms=A connect_p99_ms=B rtt_p50_ms=C direct_rtt_p50_ms=E``.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import time
import uuid
from pathlib import Path

from common import VIRTUAI, VirtuaiServer, free_port, percentile

SERVICE = """
import socket, sys, threading
size = int(sys.argv[2]) * 1024 * 1024
server = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=128)
block = b"x" * (1024 * 1024)
def serve(conn):
    with conn:
        kind = conn.recv(1)
        if kind == b"D":
            for _ in range(size // len(block)):
                conn.sendall(block)
        while kind == b"E" and (data := conn.recv(65536)):
            conn.sendall(data)
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""


def download(port: int, mib: int) -> float:
    started = time.perf_counter()
    got = 0
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"D")
        while chunk := conn.recv(1 << 20):
            got += len(chunk)
    elapsed = time.perf_counter() - started
    assert got == mib << 20, got
    return mib / elapsed


def echo(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(payload)
    got = b""
    while len(got) < len(payload):
        got += conn.recv(65536)


def connect_and_echo(port: int) -> float:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"E")
        echo(conn, b"p" * 100)
    return (time.perf_counter() - started) * 1000


def round_trips(port: int, count: int) -> list[float]:
    times = []
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"E")
        for _ in range(count):
            started = time.perf_counter()
            echo(conn, b"p" * 100)
            times.append((time.perf_counter() - started) * 1000)
    return times


def measure(port: int, mib: int) -> tuple[float, list[float], list[float]]:
    best = max(download(port, mib) for _ in range(3))
    connects = [connect_and_echo(port) for _ in range(50)]
    return best, connects, round_trips(port, 500)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    cgroup = f"virtuai-bench-pf-{uuid.uuid4().hex[:6]}"
    server = VirtuaiServer(
        {
            "VIRTUAI_LOCAL__CGROUP_NAME": cgroup,
            "VIRTUAI_LOCAL__USER_PREFIX": "vaib-",
            "VIRTUAI_SCHEDULER__INTERVAL_S": "0.2",
        }
    )
    forward = None
    try:
        workspaces = server.root / "ws"
        workspaces.mkdir(mode=0o755)
        server.env["VIRTUAI_WORKSPACES"] = str(workspaces)
        server.start()
        token = server.setup_user()
        api = server.http(token)
        port = free_port()
        job = api.ok("POST", "/api/v1/jobs", {
            "type": "job", "command": ["python3", "-c", SERVICE, str(port), str(args.mib)],
            "resources": {"cpu": "1", "memory": "512Mi"},
        })["id"]  # fmt: skip
        deadline = time.monotonic() + 60
        while api.ok("GET", f"/api/v1/jobs/{job}")["state"] != "running":
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.2)
        forward = subprocess.Popen(
            [*VIRTUAI, "port-forward", str(job), f"0:{port}"],
            env={**server.env, "VIRTUAI_TOKEN": token},
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert forward.stdout is not None
        local = int(forward.stdout.readline().split()[2].rsplit(":", 1)[1])
        while True:  # the service may still be starting
            try:
                connect_and_echo(port)
                break
            except OSError:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.2)
        direct = measure(port, args.mib)
        forwarded = measure(local, args.mib)
        api.ok("POST", f"/api/v1/jobs/{job}/cancel")
        deadline = time.monotonic() + 60  # the task's supervisor outlives the server: end it first
        while api.ok("GET", f"/api/v1/jobs/{job}")["state"] != "cancelled":
            assert time.monotonic() < deadline, "the job did not end"
            time.sleep(0.2)
    finally:
        if forward is not None:
            forward.terminate()
            forward.wait()
        server.stop()
        root = Path("/sys/fs/cgroup")
        for parent in [*root.glob(cgroup), *root.glob(f"*/{cgroup}")]:  # v2, or v1 hierarchies
            with contextlib.suppress(OSError):
                parent.rmdir()
    print(f"download {args.mib} MiB: direct {direct[0]:.0f} MiB/s, forwarded {forwarded[0]:.0f}")
    for name, d, f in (
        ("connect+echo", direct[1], forwarded[1]),
        ("echo on an open connection", direct[2], forwarded[2]),
    ):
        print(
            f"{name}: direct p50 {percentile(d, 50):.2f} ms p99 {percentile(d, 99):.2f} ms; "
            f"forwarded p50 {percentile(f, 50):.2f} ms p99 {percentile(f, 99):.2f} ms"
        )
    print(
        f"forward_mib_s={forwarded[0]:.0f} direct_mib_s={direct[0]:.0f} "
        f"throughput_ratio={forwarded[0] / direct[0]:.3f} "
        f"connect_p50_ms={percentile(forwarded[1], 50):.2f} "
        f"connect_p99_ms={percentile(forwarded[1], 99):.2f} "
        f"rtt_p50_ms={percentile(forwarded[2], 50):.2f} "
        f"direct_rtt_p50_ms={percentile(direct[2], 50):.2f}"
    )


if __name__ == "__main__":
    main()
