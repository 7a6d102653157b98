"""``virtuai env`` against a real ``virtuai up``: a build interrupted by killing the server
(and everything it started) is done again by the next server, and ``env logs -f``
follows it to the end.  The package index is a local HTTP server that holds pip's first
request until the test lets it go, so the kill lands mid-build, deterministically."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from support.platform import TEST_USER_PREFIX, public_dir, remove_state
from support.server import Server
from support.wheels import PACKAGE, make_wheel


class HeldIndex:
    """A find-links directory over HTTP; requests wait while ``held`` is clear."""

    def __init__(self, directory: Path) -> None:
        self.released = threading.Event()
        self.requested = threading.Event()
        index = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requested.set()
                if not index.released.wait(60):
                    return
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def index() -> Iterator[HeldIndex]:
    wheels = public_dir("vai-wheels-")
    make_wheel(wheels)
    held = HeldIndex(wheels)
    yield held
    held.close()
    shutil.rmtree(wheels, ignore_errors=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    workspaces = public_dir("vai-ws-")
    server = Server(
        tmp_path / "home",
        tmp_path / "config",
        {
            "VIRTUAI_WORKSPACES": str(workspaces),
            "VIRTUAI_LOCAL__USER_PREFIX": TEST_USER_PREFIX,
        },
    )
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()
    remove_state(workspaces, ["physics"])


def _kill_everything(server: Server) -> None:
    """As a crash of the machine would: the server and the build it started."""
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)


def test_a_build_interrupted_by_a_server_kill_is_redone(
    server: Server, index: HeldIndex, tmp_path: Path
) -> None:
    server.start()
    server.cli("tenant", "create", "physics")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"--no-index\n--find-links {index.url}\n{PACKAGE}\n")
    created = server.json(
        "env", "create", "hello", "--pip", str(requirements), "--tenant", "physics"
    )
    assert created["state"] == "building"

    assert index.requested.wait(120), server.log.read_text()  # pip is waiting on the index
    _kill_everything(server)

    index.released.set()
    server.start()
    log = server.cli("env", "logs", "hello", "--tenant", "physics", "-f")
    assert log.count("creating a virtual environment") == 2, log  # once per server
    assert log.rstrip().endswith("virtuai: ready"), log
    shown = server.json("env", "show", "hello", "--tenant", "physics")
    assert shown["state"] == "ready"
    listed = server.json("env", "list")
    assert [e["name"] for e in listed] == ["hello"]

    job = json.loads(
        server.cli(
            "submit",
            "--json",
            "--tenant",
            "physics",
            "--env",
            "hello",
            "--",
            "python",
            "-c",
            f"import {PACKAGE}; print({PACKAGE}.__file__)",
        )
    )
    deadline = time.monotonic() + 60
    while server.json("job", str(job["id"]))["state"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    out = server.cli("logs", str(job["id"]))
    assert out.startswith(shown["path"]), out
    server.cli("env", "delete", "hello", "--tenant", "physics")
    assert server.json("env", "list") == []
