"""`virtuai vc`, `image`, `doctor`, and `submit --vc`: what reaches the server, what is printed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_fakes import FakeApi, job, run
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from virtuai import execwire

VCS = "/api/v1/vcs"
VC = {
    "id": 1,
    "name": "lab",
    "tenant": "physics",
    "user": "alice",
    "state": "creating",
    "reason": "waiting for quota: tenant physics uses 2 of 2 cpu",
    "node_count": 2,
    "resources": {"cpu": 0.5, "memory": 2**28, "gpu": 0},
    "image": "host",
    "gateway": False,
    "subnet": "10.240.0.0/24",
    "queue_position": 1,
    "nodes": [
        {"index": i, "hostname": f"lab-{i}", "address": f"10.240.0.{i + 2}", "state": "pending",
         "host": None, "gpu_indices": [], "problems": []}
        for i in range(2)
    ],
    "created_at": "2026-05-01T10:00:00Z",
    "updated_at": "2026-05-01T10:00:00Z",
    "deleted_at": None,
    "observed_at": None,
    "events": [],
}  # fmt: skip


def frame(**fields: Any) -> str:
    return json.dumps(fields) + "\n"


def test_create_sends_the_nodes_and_says_why_it_waits(api: FakeApi) -> None:
    api.on("POST", VCS, VC, status=201)
    result = run(["vc", "create", "lab", "--nodes", "2", "--cpu-per-node", "500m",
                  "--memory-per-node", "256Mi", "--gateway"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (request,) = api.sent("POST", VCS)
    assert request.body == {
        "name": "lab",
        "nodes": 2,
        "resources": {"cpu": "500m", "memory": "256Mi", "gpu": 0},
        "image": "host",
        "gateway": True,
    }
    assert result.stdout == (
        "virtual cluster lab: created (creating: waiting for quota: tenant physics uses 2 of "
        "2 cpu)\n"
    )


def test_show_prints_the_nodes(api: FakeApi) -> None:
    api.on("GET", f"{VCS}/lab", VC)
    result = run(["vc", "show", "lab"])
    assert result.exit_code == 0, result.output
    assert "lab-1" in result.stdout and "10.240.0.3" in result.stdout
    assert "waiting for quota" in result.stdout


class ExecServer:
    """A real WebSocket server speaking ``virtuai.execwire``'s side of the server."""

    def __init__(self, refusal: tuple[int, dict[str, Any]] | None = None) -> None:
        self.refusal = refusal
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.starts: list[dict[str, Any]] = []
        self.server = serve(self._handle, "127.0.0.1", 0, process_request=self._check)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append((request.path, dict(request.headers.raw_items())))
        if self.refusal is None:
            return None
        status, body = self.refusal
        return connection.respond(status, json.dumps(body))

    def _handle(self, ws: ServerConnection) -> None:
        self.starts.append(json.loads(ws.recv()))
        ws.send(execwire.frame(execwire.STDOUT, b"out\n"))
        ws.send(execwire.frame(execwire.STDERR, b"err\n"))
        ws.send(execwire.json_frame(execwire.STATUS, {"exit_code": 7, "message": ""}))


@pytest.fixture
def exec_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExecServer]:
    server = ExecServer()
    monkeypatch.setenv("VIRTUAI_URL", server.url)
    monkeypatch.setenv("VIRTUAI_TOKEN", "vai_test")
    yield server
    server.server.shutdown()


def test_exec_streams_both_outputs_and_exits_with_the_command_status(
    exec_server: ExecServer,
) -> None:
    result = run(["vc", "exec", "lab", "--node", "1", "--tenant", "physics", "--", "sh", "-c",
                  "exit 7"])  # fmt: skip
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    ((path, headers),) = exec_server.requests
    assert path == f"{VCS}/lab/exec/ws?tenant=physics&node=1"
    assert headers["Authorization"] == "Bearer vai_test"
    (start,) = exec_server.starts
    assert start["command"] == ["sh", "-c", "exit 7"]
    # The test runner's input has no file descriptor: nothing to send, no terminal.
    assert (start["stdin"], start["tty"]) == (False, False)


def test_exec_refused_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = {"code": "conflict", "message": "virtual cluster lab is suspended, not running"}
    server = ExecServer((409, {**refusal, "field": "name"}))
    monkeypatch.setenv("VIRTUAI_URL", server.url)
    monkeypatch.setenv("VIRTUAI_TOKEN", "vai_test")
    try:
        result = run(["vc", "exec", "lab", "--", "true"])
    finally:
        server.server.shutdown()
    assert result.exit_code == 1
    assert result.stderr.startswith("error: virtual cluster lab is suspended")


def test_submit_into_a_cluster_leaves_the_shape_to_the_server(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", job(id=5), status=201)
    assert run(["submit", "--vc", "lab", "--", "hostname"]).exit_code == 0
    assert run(["submit", "--vc", "lab", "--cpu", "1", "--tasks", "1", "--", "true"]).exit_code == 0
    whole, sized = (r.body for r in api.sent("POST", "/api/v1/jobs"))
    assert whole["vc"] == "lab" and "resources" not in whole and "tasks" not in whole
    assert sized["resources"] == {"cpu": "1", "memory": "1Gi", "gpu": 0}
    assert sized["tasks"] == 1


def test_apply_takes_vc(api: FakeApi, tmp_path: Path) -> None:
    api.on("POST", "/api/v1/jobs", job(id=5), status=201)
    spec = tmp_path / "job.yaml"
    spec.write_text("type: job\ncommand: [hostname]\nvc: lab\n")
    assert run(["apply", "-f", str(spec)]).exit_code == 0
    (request,) = api.sent("POST", "/api/v1/jobs")
    assert request.body == {"type": "job", "command": ["hostname"], "vc": "lab"}


def test_image_import_needs_one_absolute_path(api: FakeApi) -> None:
    assert run(["image", "import", "alpine"]).exit_code == 2
    assert run(["image", "import", "alpine", "--from-tar", "rootfs.tar"]).exit_code == 2
    image = {"name": "alpine", "builtin": False, "size_bytes": 8 * 2**20, "created_at": None,
             "source": "tar:/srv/alpine.tar"}  # fmt: skip
    api.on("POST", "/api/v1/images", image, status=201)
    result = run(["image", "import", "alpine", "--from-tar", "/srv/alpine.tar"])
    assert (result.exit_code, result.stdout) == (0, "image alpine imported (8Mi)\n")
    (request,) = api.sent("POST", "/api/v1/images")
    assert request.body == {"name": "alpine", "from_tar": "/srv/alpine.tar"}


def test_doctor_fails_while_objects_leak(api: FakeApi) -> None:
    leaked = {"kind": "bridge", "name": "vai-deadbeef", "vc": "deadbeef"}
    report = {"virtual_clusters": True, "problem": None, "leaked": [leaked], "removed": [],
              "errors": []}  # fmt: skip
    api.on("GET", "/api/v1/doctor", report)
    api.on("POST", "/api/v1/doctor/fix", {**report, "leaked": [], "removed": [leaked]})
    found = run(["doctor"])
    assert found.exit_code == 1 and "vai-deadbeef" in found.stdout
    fixed = run(["doctor", "--fix"])
    assert (fixed.exit_code, fixed.stdout.splitlines()[1]) == (0, "removed bridge vai-deadbeef")
