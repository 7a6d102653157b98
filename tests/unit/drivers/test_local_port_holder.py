"""Who listens on a task's port (``drivers.local.ports.port_holder``), with real sockets
and a real process standing for the task: the readiness probe of a service's replica
trusts only ``OWN``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from virtuai.drivers.local.ports import Holder, port_holder, port_listened
from virtuai.host import files

LISTENER = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True); time.sleep(60)
"""


def test_own_foreign_and_nobody(tmp_path: Path) -> None:
    task = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        assert task.stdout is not None
        port = int(task.stdout.readline())
        started = {"pid": task.pid, "create_time": psutil.Process(task.pid).create_time()}
        (tmp_path / files.STARTED).write_text(json.dumps(started))
        assert port_listened(port)
        assert port_holder(tmp_path, port) is Holder.OWN
        # Another process listening on the same port, another address: not the task's.
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.2", port))
            squatter.listen()
            assert port_holder(tmp_path, port) is Holder.FOREIGN
        # Seen from another task (another process): the listener is foreign.
        other = subprocess.Popen(["sleep", "30"])
        try:
            (tmp_path / files.STARTED).write_text(json.dumps({"pid": other.pid}))
            assert port_holder(tmp_path, port) is Holder.FOREIGN
        finally:
            other.kill()
            other.wait()
    finally:
        task.kill()
        task.wait()
    deadline = time.monotonic() + 5
    while port_listened(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert port_holder(tmp_path, port) is Holder.NONE
