"""Starting ``virtuai up``: the state is private at every start, and a failed start
changes nothing (issue #11)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.server import CLI, Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "home", tmp_path / "config", {})
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_directory_and_database_are_private_at_every_start(server: Server) -> None:
    server.start()
    server.kill()
    # Someone (an old version, a restored backup, an admin) opened them up.
    server.home.chmod(0o755)
    for name in ("virtuai.db", "virtuai.db-wal", "virtuai.db-shm"):
        path = server.home / name
        if path.exists():
            path.chmod(0o644)
    server.start()
    assert _mode(server.home) == 0o700
    assert _mode(server.home / "virtuai.db") == 0o600
    for name in ("virtuai.db-wal", "virtuai.db-shm"):
        if (server.home / name).exists():
            assert _mode(server.home / name) == 0o600


def test_a_failed_start_never_rewrites_the_cli_config(server: Server, tmp_path: Path) -> None:
    server.start()
    config = Path(server.env["XDG_CONFIG_HOME"]) / "virtuai" / "cli.yaml"
    before = config.read_bytes()
    # A second installation (another state directory) on the port of the running one.
    env = {**server.env, "VIRTUAI_HOME": str(tmp_path / "other-home")}
    result = subprocess.run(
        [*CLI, "up", "--port", str(server.port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "is up" not in output
    assert "cannot listen on" in output and str(server.port) in output
    assert "created administrator" not in output
    assert config.read_bytes() == before
    assert not (tmp_path / "other-home" / "virtuai.db").exists()  # nothing was created
    # The CLI config still points at the running installation, with a working token.
    assert "admin" in server.cli("whoami")


def test_a_restart_answers_healthz_early_and_serves_what_came_meanwhile(server: Server) -> None:
    """After kill -9, /healthz answers while the platform is still being built; requests
    sent before it is up wait for it and are served, not refused (server/gate.py)."""
    server.start()
    server.kill()
    assert server.process is not None
    server.process = subprocess.Popen(
        [*CLI, "up", "--port", str(server.port)],
        env=server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    token = _admin_token(server)
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "no /healthz in 60 s"
        try:
            health = httpx.get(f"{server.url}/healthz", timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.02)
    assert health.status_code == 200
    assert health.json()["status"] in ("starting", "ok")
    jobs = httpx.get(
        f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert jobs.status_code == 200 and jobs.json() == []
    assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200


def _admin_token(server: Server) -> str:
    config = Path(server.env["XDG_CONFIG_HOME"]) / "virtuai" / "cli.yaml"
    for line in config.read_text().splitlines():
        if line.startswith("token"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no token in {config}")


def _session_processes(sid: int) -> list[str]:
    """The processes of session ``sid`` (``virtuai up`` starts one of its own)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:  # after ")": state, ppid, pgrp, session
            found.append(f"{proc.name} {cmdline}")
    return found


@pytest.mark.parametrize("engine", ["builtin", "nginx"])
def test_sigterm_stops_the_server_cleanly_in_every_proxy_engine(
    tmp_path: Path, engine: str
) -> None:
    """SIGTERM: the server's own cleanup runs (the platform stopped, nginx and its files
    gone), it exits 143, its port is free and no process of its session is left."""
    if engine == "nginx" and shutil.which("nginx") is None:
        pytest.skip("nginx-light is not installed")
    server = Server(tmp_path / "home", tmp_path / "config", {"VIRTUAI_PROXY__ENGINE": engine})
    server.start()
    try:
        assert server.process is not None
        pid = server.process.pid
        if engine == "nginx":
            nginx_pid = int((server.home / "nginx" / "nginx.pid").read_text())
            os.kill(nginx_pid, 0)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()
    assert "virtuai stopped" in server.log.read_text()
    assert "Traceback" not in server.log.read_text()
    deadline = time.monotonic() + 10
    while _session_processes(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session_processes(pid) == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0
    if engine == "nginx":
        assert not Path(f"/proc/{nginx_pid}").exists()
        # Its work directory (cached auth answers): in the state directory, or, as root,
        # a directory of nginx's worker user that the server noted.
        noted = server.home / "nginx" / "work-path"
        work = Path(noted.read_text()) if noted.exists() else server.home / "nginx" / "work"
        assert not work.exists()
