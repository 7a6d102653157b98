"""``virtuai up --proxy-engine nginx`` (``proxy.nginx``): a real nginx, child of a real
server, in front of a real service replica (an echo server run as the tenant's user).

In order: the replica is reached through nginx itself once the builtin proxy has
cached its caller and route (the replica sees exactly the headers the builtin proxy
would pass: no credential, no session cookie, its secret); no credential is refused
401 and another tenant 403 (nginx hands those to the builtin proxy, which answers as
without nginx); a revoked token is refused within ``AUTH_CACHE_S``; a WebSocket goes
through (the builtin proxy, by nginx's fallback); a scaled-to-zero service's first
request is held through the fallback until its replica is ready; requests nginx
served count as the service's traffic; a replica's ``Set-Cookie`` of the platform's
session cookie never reaches the client (its own cookies do), through nginx as
through the builtin proxy; an idle client connection stays open while a new
workload's address appears (nginx is not reloaded); and a ``kill -9`` of the server
takes nginx with it."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from support.platform import public_dir
from support.server import CLI, Server
from virtuai.proxy.nginx import AUTH_CACHE_S
from virtuai.proxy.nginxfind import find_modules

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="replicas run as the tenant's Unix user"),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx-light is not installed"),
    pytest.mark.skipif(find_modules() is None, reason="libnginx-mod-http-lua is not installed"),
]
SKEW = dt.timedelta(seconds=0.5)  # last_request_at is kept to the second
PREFIX = f"vn{secrets.token_hex(2)}-"

# GET: the request's path and headers as received, names in their case (nginx writes
# ``Host``, the builtin proxy ``host``); a WebSocket: each text message echoed (a minimal
# RFC 6455 server: the replica runs with the system's Python, standard library only).
ECHO = r"""
import base64, hashlib, json, os, struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        body = json.dumps({"path": self.path, "headers": list(self.headers.items())}).encode()
        self.send_response(200)
        if self.path.startswith("/cookies"):  # its own, and the platform's session cookie
            self.send_header("Set-Cookie", "mine=1; Path=/")
            self.send_header("Set-Cookie", "virtuai_session=fixed; Path=/")
            self.send_header("Set-Cookie", " virtuai_session =fixed2; Path=/")
            self.send_header("Set-Cookie", "virtuai_session_x=2")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"] + GUID
        accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2 or head[0] & 0x0F == 8:
                return
            size = head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", self.rfile.read(2))[0]
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
            size = bytes([len(data)]) if len(data) < 126 else b"\x7e" + struct.pack("!H", len(data))
            frame = b"\x81" + size
            self.wfile.write(frame + data)
            self.wfile.flush()

    def log_message(self, *args):
        pass

ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Echo).serve_forever()
"""


@dataclass
class Lab:
    server: Server
    files: Path
    alice: str
    carol: str


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("nginx")
    workspaces = public_dir("vai-ngx-ws-")
    code = public_dir("vai-ngx-code-")
    (code / "echo.py").write_text(ECHO)
    (code / "echo.py").chmod(0o644)
    server = Server(
        root / "home",
        root / "config",
        {
            "VIRTUAI_PROXY__ENGINE": "nginx",
            "VIRTUAI_WORKSPACES": str(workspaces),
            "VIRTUAI_LOCAL__USER_PREFIX": PREFIX,
            "VIRTUAI_LOCAL__KILL_GRACE_S": "3",
            "VIRTUAI_SCHEDULER__INTERVAL_S": "0.2",
            "VIRTUAI_SERVICES__RECONCILE_INTERVAL_S": "0.2",
            "VIRTUAI_SERVICES__RATE_WINDOW_S": "3",
        },
    )
    server.start()
    server.cli("tenant", "create", "physics")
    server.cli("tenant", "create", "chem")
    new = Lab(
        server,
        code,
        alice=server.cli("user", "create", "alice", "--tenant", "physics").split()[0],
        carol=server.cli("user", "create", "carol", "--tenant", "chem").split()[0],
    )
    try:
        yield new
    finally:
        if server.process is None or server.process.poll() is not None:
            server.start()  # the last test kills it: its replicas outlive it, as tasks do
        for name in ("echo", "cold", "echo2"):
            server.run("service", "delete", name, token=new.alice)
        _wait("the replicas stopped", lambda: not _running(code), 30)
        server.kill()
        # nginx's workers' directory, left by the kill -9 (the next start would remove it).
        work = server.home / "nginx" / "work-path"
        if work.exists():
            shutil.rmtree(work.read_text().strip(), ignore_errors=True)
        shutil.rmtree(workspaces, ignore_errors=True)
        subprocess.run(["userdel", PREFIX + "physics"], capture_output=True, check=False)
        subprocess.run(["userdel", PREFIX + "chem"], capture_output=True, check=False)
        shutil.rmtree(code, ignore_errors=True)


def _apply(lab: Lab, name: str, replicas: str) -> None:
    path = lab.files / f"{name}.yaml"
    path.write_text(
        f"""
type: service
name: {name}
command: [python3, {lab.files / "echo.py"}]
resources: {{cpu: 0.2, memory: 128Mi}}
replicas: {replicas}
readiness: {{path: /healthz, interval: 1}}
"""
    )
    lab.server.cli("apply", "-f", str(path), token=lab.alice)


def _running(code: Path) -> bool:
    """Whether a replica of this module's code still runs."""
    found = subprocess.run(["pgrep", "-f", str(code / "echo.py")], check=False, capture_output=True)
    return found.returncode == 0


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _get(lab: Lab, path: str, token: str | None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{lab.server.url}{path}", headers=headers, timeout=150)


def _by_nginx(lab: Lab, token: str) -> dict[str, Any]:
    """An answer of the echo replica to a request nginx passed on itself."""
    seen: dict[str, Any] = {}

    def served() -> bool:
        answer = _get(lab, "/svc/physics/echo/hello?x=1", token, Cookie="virtuai_session=s; k=1")
        assert answer.status_code == 200, answer.text
        seen.update(answer.json())
        return any(name == "Host" for name, _ in seen["headers"])

    _wait("a request served by nginx", served, 10)
    return seen


def test_a_service_is_served_by_nginx_with_the_builtin_proxys_headers(lab: Lab) -> None:
    _apply(lab, "echo", "1")
    _wait("a ready replica", lambda: _get(lab, "/svc/physics/echo/", lab.alice).status_code == 200)
    seen = _by_nginx(lab, lab.alice)
    assert seen["path"] == "/hello?x=1"  # the prefix stripped, the query kept
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert "authorization" not in headers
    assert headers["cookie"] == "k=1"  # the platform's session cookie never reaches it
    assert headers["x-virtuai-auth"] == "bearer"
    assert len(headers["x-virtuai-notebook-secret"]) > 20
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "127.0.0.1"


def test_refusals_are_the_builtin_proxys(lab: Lab) -> None:
    answer = _get(lab, "/svc/physics/echo/", None)
    assert answer.status_code == 401 and answer.json()["code"] == "unauthenticated"
    answer = _get(lab, "/svc/physics/echo/", lab.carol)
    assert answer.status_code == 403 and "physics" in answer.json()["message"]
    # A browser without credentials is sent to the sign-in page, as without nginx.
    answer = _get(lab, "/svc/physics/echo/", None, Accept="text/html")
    assert answer.status_code == 302 and "next=" in answer.headers["location"]
    # nginx's question to the server is not for callers.
    assert _get(lab, "/_virtuai/nginx-auth", lab.alice).status_code == 404


def test_a_revoked_token_is_refused_within_the_auth_cache_time(lab: Lab) -> None:
    created = lab.server.json("token", "create", "--name", "short", token=lab.alice)
    token = created["token"]
    _by_nginx(lab, token)
    lab.server.cli("token", "revoke", str(created["id"]), token=lab.alice)
    revoked = time.monotonic()
    time.sleep(AUTH_CACHE_S + 0.2)
    answer = _get(lab, "/svc/physics/echo/", token)
    assert answer.status_code == 401, (answer.status_code, time.monotonic() - revoked)


def test_a_websocket_goes_through(lab: Lab) -> None:
    url = lab.server.url.replace("http", "ws") + "/svc/physics/echo/ws"
    with connect(url, additional_headers={"Authorization": f"Bearer {lab.alice}"}) as ws:
        ws.send("1+1")
        assert ws.recv(timeout=10) == "1+1"


def test_requests_served_by_nginx_count_as_traffic(lab: Lab) -> None:
    # Only a round whose every request nginx passed on itself proves nginx's counting: on
    # a loaded machine the route cached by the builtin proxy (2 s) can lapse during the
    # pause, and the builtin then serves (and counts) the request; such a round is redone.
    for _ in range(5):
        _by_nginx(lab, lab.alice)
        time.sleep(1.5)  # what the builtin proxy counted is older than ``since``
        since = dt.datetime.now(dt.UTC)
        answers = [_get(lab, "/svc/physics/echo/", lab.alice).json() for _ in range(5)]
        if all(any(name == "Host" for name, _ in seen["headers"]) for seen in answers):
            break
    else:
        raise AssertionError("no round of 5 requests was passed on by nginx alone")

    def counted() -> bool:
        shown = lab.server.json("service", "show", "echo", token=lab.alice)
        last = shown["last_request_at"]
        return last is not None and dt.datetime.fromisoformat(last) >= since - SKEW

    _wait("nginx's requests counted", counted, 15)


def test_a_cold_start_is_held_through_the_fallback(lab: Lab) -> None:
    _apply(lab, "cold", "{min: 0, max: 1}")
    assert lab.server.json("service", "show", "cold", token=lab.alice)["replicas"] == []
    answer = _get(lab, "/svc/physics/cold/x", lab.alice)
    assert answer.status_code == 200, answer.text
    assert answer.json()["path"] == "/x"


def test_a_workload_cannot_set_the_platforms_session_cookie(lab: Lab) -> None:
    by: set[str] = set()

    def served() -> bool:
        answer = _get(lab, "/svc/physics/echo/cookies", lab.alice)
        assert answer.status_code == 200, answer.text
        # Through either engine: its own cookies only (``proxy.headers.sets_session``).
        assert answer.headers.get_list("set-cookie") == ["mine=1; Path=/", "virtuai_session_x=2"]
        nginx = any(name == "Host" for name, _ in answer.json()["headers"])
        by.add("nginx" if nginx else "builtin")
        return nginx

    _wait("a request served by nginx", served, 10)
    assert "nginx" in by


def test_an_idle_client_connection_survives_a_new_workload(lab: Lab) -> None:
    """nginx reaches every workload through one keep-alive pool, so a workload's new address
    needs no reload (a reload closes idle client connections)."""
    host, port = lab.server.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {lab.alice}"}

    def by_nginx(path: str) -> bool:
        conn.request("GET", path, headers=headers)
        answer = conn.getresponse()
        assert answer.status == 200
        return any(name == "Host" for name, _ in json.loads(answer.read())["headers"])

    _wait("a request served by nginx", lambda: by_nginx("/svc/physics/echo/"), 10)
    assert conn.sock is not None
    local = conn.sock.getsockname()
    # A new workload, reached through nginx (its address never seen by nginx before).
    _apply(lab, "echo2", "1")
    _wait("echo2 ready", lambda: _get(lab, "/svc/physics/echo2/", lab.alice).status_code == 200)
    _wait("echo2 served by nginx", lambda: _by_nginx_at(lab, "/svc/physics/echo2/"), 10)
    time.sleep(2.5)  # longer than the reload delay nginx's engine had (1 s)
    # The idle connection was not closed under it (http.client would raise here, on the
    # send or the answer): answered on the same socket, by nginx or the builtin proxy.
    by_nginx("/svc/physics/echo/")
    assert conn.sock is not None and conn.sock.getsockname() == local
    conn.close()


def _by_nginx_at(lab: Lab, path: str) -> bool:
    answer = _get(lab, path, lab.alice)
    assert answer.status_code == 200, answer.text
    return any(name == "Host" for name, _ in answer.json()["headers"])


def test_a_busy_port_fails_the_start_as_without_nginx(lab: Lab, tmp_path: Path) -> None:
    """Another installation on the port: nginx would fail to bind it, but a connection
    would reach the running one; the start fails at once, nothing created."""
    env = {**lab.server.env, "VIRTUAI_HOME": str(tmp_path / "other")}
    argv = [*CLI, "up", "--port", lab.server.url.rsplit(":", 1)[1], "--proxy-engine", "nginx"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "cannot listen on" in result.stdout + result.stderr
    assert not (tmp_path / "other" / "virtuai.db").exists()


def test_nginx_dies_with_the_server(lab: Lab) -> None:
    pid = int((lab.server.home / "nginx" / "nginx.pid").read_text())
    os.kill(pid, 0)
    lab.server.kill()
    _wait("nginx gone", lambda: not Path(f"/proc/{pid}").exists(), 10)
