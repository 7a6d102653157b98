"""A real ``virtuai up`` process and the real CLI, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

CLI = [sys.executable, "-m", "virtuai"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` served by a real uvicorn on 127.0.0.1 in a thread; yields ``host:port``."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Server:
    """``virtuai up`` in its own state directory, with its own CLI configuration."""

    def __init__(self, home: Path, config_home: Path, extra_env: dict[str, str]) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "VIRTUAI_HOME": str(home),
            "XDG_CONFIG_HOME": str(config_home),
            **extra_env,
        }
        self.env.pop("VIRTUAI_TOKEN", None)
        self.env.pop("VIRTUAI_URL", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home / "server.log"

    def start(self, command: list[str] | None = None) -> None:
        """``virtuai up`` on this port, or ``command`` (which must listen on it)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command or [*CLI, "up", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"virtuai up exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"virtuai up did not become healthy:\n{self.log.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=30)

    def cli(self, *args: str, token: str | None = None, check: bool = True) -> str:
        env = dict(self.env)
        if token is not None:
            env["VIRTUAI_TOKEN"] = token
        result = subprocess.run(
            [*CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"virtuai {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def run(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if token is not None:
            env["VIRTUAI_TOKEN"] = token
        return subprocess.run(
            [*CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def json(self, *args: str, token: str | None = None) -> Any:
        return json.loads(self.cli(*args, "--json", token=token))
