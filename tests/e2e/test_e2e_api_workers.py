"""API worker processes (``server.api_workers``, server/workers.py): real ``virtuai up``
processes on SQLite and PostgreSQL, and clients whose connections are known to be
held by each process (matched through /proc, not guessed)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.postgres import fresh_database
from support.server import Server

WORKERS = 3  # the main process and two workers


class Conn:
    """One keep-alive connection; ``pid``: the server process that accepted it."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.http.connect()
        self.pid = 0

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        self.http.request(method, path, body=data, headers=headers)
        response = self.http.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def close(self) -> None:
        self.http.close()


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir() if fds.exists() else ():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def _server_inode(conn: Conn) -> str | None:
    """The inode of the server's end of ``conn`` (local port = the server's port)."""
    client_port = conn.http.sock.getsockname()[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == conn.port and int(remote.split(":")[1], 16) == (
                client_port
            ):
                return fields[9]
    return None


def worker_pids(server: Server) -> list[int]:
    assert server.process is not None
    pids = []  # children of any of its threads (the workers' is not the main thread)
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return [p for p in pids if b"virtuai.server.apiworker" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def one_per_process(server: Server, token: str, timeout: float = 60) -> dict[int, Conn]:
    """A connection held by each of the server's processes (workers start after the main
    process is ready: wait for them)."""
    assert server.process is not None
    held: dict[int, Conn] = {}
    extra: list[Conn] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = [server.process.pid, *worker_pids(server)]
        if len(held) == WORKERS and set(held) <= set(pids):
            break
        assert time.monotonic() < deadline, f"connections reached only {sorted(held)} of {pids}"
        for kept in held.values():  # uvicorn closes a connection idle for 5 s
            assert kept.call("GET", "/healthz")[0] == 200
        conn = Conn(server.port, token)
        status, _ = conn.call("GET", "/healthz")  # accepted and answered
        assert status == 200
        inode = _server_inode(conn)
        owner = next((p for p in pids if inode in _socket_inodes(p)), None)
        if owner is not None and owner not in held:
            conn.pid = owner
            held[owner] = conn
        else:
            extra.append(conn)
            time.sleep(0.05)
    for conn in extra:
        conn.close()
    return held


def admin_token(server: Server) -> str:
    config = Path(server.env["XDG_CONFIG_HOME"]) / "virtuai" / "cli.yaml"
    line = next(x for x in config.read_text().splitlines() if x.startswith("token"))
    return line.split(":", 1)[1].strip()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per database for the module (each start costs seconds); the last test
    stops it."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    env = {
        "VIRTUAI_SERVER__API_WORKERS": str(WORKERS),
        # The loops' own period is long: a job that starts at once was woken by its submit.
        "VIRTUAI_SCHEDULER__INTERVAL_S": "30",
    }
    if request.param == "postgresql":
        with fresh_database(request.getfixturevalue("postgres_url")) as url:
            yield from _running(tmp_path, {**env, "VIRTUAI_DATABASE_URL": url})
    else:
        yield from _running(tmp_path, env)


def _running(tmp_path: Path, env: dict[str, str]) -> Iterator[Server]:
    server = Server(tmp_path / "home", tmp_path / "config", env)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()


def member_token(conn: Conn, name: str) -> str:
    status, _ = conn.call("POST", "/api/v1/tenants", {"name": f"t-{name}", "quota": {}})
    assert status == 201
    status, created = conn.call("POST", "/api/v1/users", {"name": name, "tenant": f"t-{name}"})
    assert status == 201, created
    token: str = created["token"]
    return token


def held_job(blocker: int) -> dict[str, Any]:
    return {
        "command": ["true"],
        "resources": {"cpu": 0.1, "memory": "16Mi"},
        "dependency": f"afterok:{blocker}",
    }


def test_workers_serve_wake_and_record_every_submit_once(server: Server) -> None:
    admin = admin_token(server)
    conns = one_per_process(server, admin)
    token = member_token(next(iter(conns.values())), "ada")
    for conn in conns.values():
        conn.token = token
    # A submit through a worker wakes the leader's loops at once (their period is 30 s).
    worker = next(c for pid, c in conns.items() if pid != server.process.pid)  # type: ignore[union-attr]
    status, job = worker.call(
        "POST", "/api/v1/jobs", {"command": ["sleep", "600"], "resources": {"cpu": 0.1}}
    )
    assert status == 201
    deadline = time.monotonic() + 15
    while worker.call("GET", f"/api/v1/jobs/{job['id']}")[1]["state"] != "running":
        assert time.monotonic() < deadline, "a worker's submit did not wake the scheduler"
        time.sleep(0.1)
    # Every process submits at once, many per connection; each 201 is one record.
    acknowledged: list[int] = []
    lock = threading.Lock()

    def submit(conn: Conn) -> None:
        for _ in range(20):
            code, answer = conn.call("POST", "/api/v1/jobs", held_job(job["id"]))
            assert code == 201, answer
            with lock:
                acknowledged.append(answer["id"])

    threads = [threading.Thread(target=submit, args=(c,)) for c in conns.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(acknowledged) == 20 * WORKERS == len(set(acknowledged))
    status, listed = worker.call("GET", "/api/v1/jobs?limit=500")
    assert status == 200
    recorded = [j["id"] for j in listed if j["id"] != job["id"]]
    assert sorted(recorded) == sorted(acknowledged)
    # /readyz and /metrics still answer, whichever process holds the connection.
    for conn in conns.values():
        assert conn.call("GET", "/readyz")[0] == 200
        conn.http.request("GET", "/metrics", headers={"Authorization": f"Bearer {admin}"})
        response = conn.http.getresponse()
        assert response.status == 200 and b"virtuai" in response.read()


def test_a_revoked_token_is_refused_by_every_process_at_once(server: Server) -> None:
    admin = admin_token(server)
    conns = one_per_process(server, admin)
    any_conn = next(iter(conns.values()))
    token = member_token(any_conn, "bob")
    for conn in conns.values():
        conn.token = token
        for _ in range(2):  # cached by every process (the fast submit path's cache too)
            assert conn.call("GET", "/api/v1/jobs")[0] == 200
    # Revoked through one process (an admin's connection to a worker)...
    revoker = next(c for pid, c in conns.items() if pid != server.process.pid)  # type: ignore[union-attr]
    revoker.token = admin
    assert revoker.call("POST", "/api/v1/users/bob/disable")[0] == 200
    # ...and refused by every one, at its very next request (no cache lifetime to wait).
    for conn in conns.values():
        conn.token = token
        assert conn.call("GET", "/api/v1/jobs")[0] == 401, conn.pid
        assert conn.call("POST", "/api/v1/jobs", held_job(1))[0] == 401, conn.pid


def test_a_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(server: Server) -> None:
    admin = admin_token(server)
    conns = one_per_process(server, admin)
    first = next(iter(conns.values()))
    token = member_token(first, "cy")
    first.token = token
    status, blocker = first.call(
        "POST", "/api/v1/jobs", {"command": ["sleep", "600"], "resources": {"cpu": 0.1}}
    )
    assert status == 201 and server.process is not None
    acknowledged: list[int] = []
    stop = threading.Event()

    def load() -> None:
        conn = Conn(server.port, token)
        while not stop.is_set():
            try:
                code, answer = conn.call("POST", "/api/v1/jobs", held_job(blocker["id"]))
            except (http.client.HTTPException, OSError):  # its process was killed
                conn.close()
                conn = Conn(server.port, token)
                continue
            if code == 201:
                acknowledged.append(answer["id"])
        conn.close()

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    victim = next(pid for pid in conns if pid != server.process.pid)
    os.kill(victim, signal.SIGKILL)
    time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 60
    while victim in worker_pids(server) or len(worker_pids(server)) < WORKERS - 1:
        assert time.monotonic() < deadline, "the killed worker was not started again"
        time.sleep(0.1)
    recorded = every_job_id(Conn(server.port, token))
    assert recorded >= set(acknowledged) and acknowledged


def every_job_id(conn: Conn) -> set[int]:
    """The ids of all the jobs the caller sees, page after page (more than one page's
    worth are submitted in two seconds)."""
    ids: set[int] = set()
    query = "limit=1000"
    while True:
        status, page = conn.call("GET", f"/api/v1/jobs?{query}")
        assert status == 200, page
        if not page:
            return ids
        ids.update(j["id"] for j in page)
        query = f"limit=1000&before_id={page[-1]['id']}"


def test_the_server_stops_its_workers_and_they_die_with_it(server: Server) -> None:
    conns = one_per_process(server, admin_token(server))
    workers = [pid for pid in conns if pid != server.process.pid]  # type: ignore[union-attr]
    assert len(workers) == WORKERS - 1
    server.kill(signal.SIGTERM)  # a clean stop: workers first, then the main process
    assert server.process is not None and server.process.returncode == 128 + signal.SIGTERM
    assert not any(b"apiworker" in _cmdline(pid) for pid in workers)
    if "VIRTUAI_DATABASE_URL" in server.env:
        return  # what follows does not depend on the database: SQLite only
    # kill -9 of the main process: the workers follow (PR_SET_PDEATHSIG).
    server.start()
    workers = [p for p in one_per_process(server, admin_token(server)) if p != server.process.pid]
    server.kill(signal.SIGKILL)
    deadline = time.monotonic() + 20
    while any(b"apiworker" in _cmdline(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their server"
        time.sleep(0.1)
