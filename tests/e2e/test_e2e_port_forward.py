"""`virtuai port-forward`: a real `virtuai up`, the real CLI, real servers inside jobs and nodes.

A job runs `python -m http.server` and a small "checksum" service that reads
until EOF (a half-close) and answers the SHA-256 of what it read; both are
reached through `virtuai port-forward` from a local port: many files fetched at
once, megabytes of random bytes both ways.  A port nothing of the job listens
on -- free, or held by another tenant's job on the same machine -- is refused
cleanly and the forward goes on; another tenant's user, no token, and a job
that has ended are refused.  The same through a virtual cluster's node, and to
a job running inside the cluster.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support.server import CLI, Server, free_port
from support.vclusters import can_run_vcs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(can_run_vcs() is not None, reason=str(can_run_vcs())),
]

# The e2e module's fixtures: a runtime of the test's own and a server on it.
from test_e2e_vc import runtime_config, server  # noqa: E402, F401

MIB = 1024 * 1024
FINISHED = {"succeeded", "failed", "cancelled", "timed_out", "preempted"}
# Reads a whole request until the client shuts its sending side, then answers the
# SHA-256 and length of what came, and the bytes themselves reversed: both halves of
# the connection carry megabytes, and the answer only exists after the half-close.
CHECKSUM_SERVICE = """
import hashlib, socket, sys, threading
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
def serve(conn):
    with conn:
        data = bytearray()
        while chunk := conn.recv(65536):
            data += chunk
        conn.sendall(f"{hashlib.sha256(data).hexdigest()} {len(data)}\\n".encode())
        conn.sendall(bytes(reversed(data)))
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""


def _users(srv: Server) -> tuple[str, str]:
    srv.cli("tenant", "create", "physics", "--cpu", "3", "--memory", "3Gi")
    srv.cli("tenant", "create", "chem", "--cpu", "1", "--memory", "1Gi")
    alice = srv.cli("user", "create", "alice", "--tenant", "physics").strip()
    bob = srv.cli("user", "create", "bob", "--tenant", "chem").strip()
    return alice, bob


def _submit(srv: Server, token: str, *args: str) -> int:
    return int(srv.cli("submit", "--cpu", "0.5", "--memory", "256Mi", *args, token=token))


def _wait_running(srv: Server, token: str, job: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = srv.json("job", str(job), token=token)["state"]
        if state == "running":
            return
        assert state in ("pending", "admitted", "starting"), state
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not start")


@contextmanager
def forward(srv: Server, token: str, *args: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """`virtuai port-forward ARGS` running; yields the local port it listens on."""
    env = {**srv.env, "VIRTUAI_TOKEN": token}
    proc = subprocess.Popen(
        [*CLI, "port-forward", *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Forwarding from 127.0.0.1:"), (
            line,
            proc.stderr and proc.stderr.read(),
        )
        yield int(line.split()[2].rsplit(":", 1)[1]), proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _fetch_when_up(url: str, timeout: float = 30) -> httpx.Response:
    """The service in the job may still be starting: retry until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=10)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.3)


def _round_trip(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, read the answer; ``b""`` when the forward closed (or reset)
    the connection without one."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)  # the half-close travels: the service answers after it
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            return b""
    return b"".join(chunks)


def _check_checksum_service(port: int) -> None:
    data = os.urandom(4 * MIB) + b"\x00\xff\r\n"
    deadline = time.monotonic() + 30
    while not (answer := _round_trip(port, data)):  # refused while it starts: closed at once
        assert time.monotonic() < deadline, "the checksum service never answered"
        time.sleep(0.3)
    head, _, body = answer.partition(b"\n")
    assert head.decode() == f"{hashlib.sha256(data).hexdigest()} {len(data)}"
    assert body == data[::-1]


def _end(srv: Server, token: str, *jobs: int) -> None:
    """Cancel the jobs and wait for their ends (the fixture then checks nothing is left)."""
    for job in jobs:
        srv.run("cancel", str(job), token=token)
    deadline = time.monotonic() + 30
    for job in jobs:
        while srv.json("job", str(job), token=token)["state"] not in FINISHED:
            assert time.monotonic() < deadline, f"job {job} did not end"
            time.sleep(0.2)


def _ws_status(srv: Server, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with connect(f"ws://127.0.0.1:{srv.port}{path}", additional_headers=headers):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_forward_to_a_job(server: Server) -> None:  # noqa: F811
    srv = server
    alice, bob = _users(srv)
    http_port, sum_port, bob_port, idle_port = free_port(), free_port(), free_port(), free_port()
    # Files to serve, and their checksums, made by the job itself in its workspace.
    script = (
        "mkdir -p www && cd www && for i in 0 1 2 3 4 5 6 7; do "
        "head -c 300000 /dev/urandom > f$i; done && sha256sum f* > sums || exit 1; "
        f'python3 -c "$SERVICE" {sum_port} & '
        f"exec python3 -m http.server {http_port} --bind 127.0.0.1"
    )
    job = _submit(srv, alice, "--env", f"SERVICE={CHECKSUM_SERVICE}", "--", "sh", "-c", script)
    # Another tenant's job listens on a port of the same machine.
    theirs = _submit(srv, bob, "--", "python3", "-m", "http.server", str(bob_port),
                     "--bind", "127.0.0.1")  # fmt: skip
    try:
        _wait_running(srv, alice, job)
        _wait_running(srv, bob, theirs)

        with forward(srv, alice, str(job), f"0:{http_port}") as (local, _):
            sums = _fetch_when_up(f"http://127.0.0.1:{local}/sums").text
            expected = dict(line.split()[::-1] for line in sums.splitlines())
            assert len(expected) == 8

            def fetch(name: str) -> tuple[str, str]:
                body = httpx.get(f"http://127.0.0.1:{local}/{name}", timeout=30).content
                return name, hashlib.sha256(body).hexdigest()

            with ThreadPoolExecutor(16) as pool:  # many connections at once, each its own tunnel
                fetched = list(pool.map(fetch, [f"f{i % 8}" for i in range(32)]))
            assert all(expected[name] == digest for name, digest in fetched)

        with forward(srv, alice, str(job), f"0:{sum_port}") as (local, _):
            _check_checksum_service(local)

        # Nothing of alice's job listens there (bob's job does, and so would the server):
        # the local connection is closed at once, the reason printed, the forward goes on.
        for port in (bob_port, idle_port, srv.port):
            with forward(srv, alice, str(job), f"0:{port}") as (local, proc):
                assert _round_trip(local, b"GET / HTTP/1.0\r\n\r\n") == b""
                assert proc.poll() is None
            assert f"nothing of job {job} (task 0) listens on port {port}" in (
                proc.stderr.read() or ""
            )

        # Other tenants, and no credentials, are refused before any WebSocket opens.
        refused = srv.run("port-forward", str(job), f"0:{http_port}", token=bob)
        assert refused.returncode == 1 and f"job {job} not found" in refused.stderr, refused.stderr
        path = f"/api/v1/jobs/{job}/port-forward/ws?port={http_port}"
        assert _ws_status(srv, path, bob) == 404
        assert _ws_status(srv, path, None) == 401
        assert _ws_status(srv, f"/api/v1/jobs/{job}/port-forward/ws?port=99999", alice) == 422

        _end(srv, bob, theirs)
        _end(srv, alice, job)
        ended = srv.run("port-forward", str(job), f"0:{http_port}", token=alice)
        assert ended.returncode == 1 and "has ended (cancelled)" in ended.stderr, ended.stderr
        assert _ws_status(srv, path, alice) == 409
    finally:
        _end(srv, bob, theirs)
        _end(srv, alice, job)


def test_forward_to_a_virtual_node_and_a_job_inside(server: Server) -> None:  # noqa: F811
    srv = server
    alice, bob = _users(srv)
    created = srv.cli(
        "vc", "create", "lab", "--nodes", "1", "--cpu-per-node", "1",
        "--memory-per-node", "512Mi", "--wait", token=alice,
    )  # fmt: skip
    assert "(running:" in created, created
    try:
        job = int(srv.cli("submit", "--vc", "lab", "--", "python3", "-c", CHECKSUM_SERVICE, "8000",
                          token=alice))  # fmt: skip
        _wait_running(srv, alice, job)
        with forward(srv, alice, "lab/0", "0:8000") as (local, _):
            _check_checksum_service(local)
        with forward(srv, alice, str(job), "0:8000") as (local, _):
            _check_checksum_service(local)
        with forward(srv, alice, "lab/lab-0", "0:8001") as (local, proc):
            assert _round_trip(local, b"x") == b""
            assert proc.poll() is None
        assert "nothing listens on port 8001 of node lab-0" in (proc.stderr.read() or "")
        refused = srv.run("port-forward", "lab/0", "0:8000", token=bob)
        assert refused.returncode == 1 and "virtual cluster lab not found" in refused.stderr
        assert _ws_status(srv, "/api/v1/vcs/lab/port-forward/ws?port=8000", bob) == 404
        _end(srv, alice, job)
    finally:
        srv.cli("vc", "delete", "lab", "--wait", token=alice)
