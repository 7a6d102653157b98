"""`virtuai port-forward`'s arguments, and the listener lookup against a real socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from virtuai.cli.client import ApiError
from virtuai.cli.portforward import Target, parse_ports, parse_target
from virtuai.drivers.local.ports import task_listener
from virtuai.host import files


def test_targets() -> None:
    assert parse_target("12", 1, None) == Target(job=12, task=1)
    assert parse_target("lab/1", 0, "physics") == Target(vc="lab", node=1, tenant="physics")
    assert parse_target("lab/lab-2", 0, None) == Target(vc="lab", node=2)
    for bad in ("x", "lab/", "/1", "lab/other-1", "1.5"):
        with pytest.raises(ApiError) as refused:
            parse_target(bad, 0, None)
        assert refused.value.field == "TARGET"


def test_ports() -> None:
    assert parse_ports("8080:80") == (8080, 80)
    assert parse_ports("8000") == (8000, 8000)
    assert parse_ports(":80") == (0, 80)
    for bad in ("a:b", "80:0", "70000:1", "1:70000", ""):
        with pytest.raises(ApiError) as refused:
            parse_ports(bad)
        assert refused.value.field == "PORTS"


def test_only_the_tasks_own_listening_socket_counts(tmp_path: Path) -> None:
    """A real process tree listening (IPv6 wildcard, so dual stack), and one that does not."""
    code = (
        "import socket, sys, time\n"
        "s = socket.create_server(('::', 0), family=socket.AF_INET6, dualstack_ipv6=True)\n"
        "print(s.getsockname()[1], flush=True)\n"
        "time.sleep(60)\n"
    )
    # The listener is a grandchild of the task's main process (as behind `sh -c`).
    main = subprocess.Popen(
        ["sh", "-c", f"{sys.executable} -c \"$CODE\"; :"], env={**os.environ, "CODE": code},
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    other = socket.create_server(("127.0.0.1", 0))
    try:
        assert main.stdout is not None
        port = int(main.stdout.readline())
        started = {"pid": main.pid, "create_time": psutil.Process(main.pid).create_time()}
        files.write_json_atomic(tmp_path / files.STARTED, started)
        assert task_listener(tmp_path, port) == "::1"
        # Someone else's socket on this machine is not the task's.
        assert task_listener(tmp_path, other.getsockname()[1]) is None
        # A recycled pid (another start time) owns nothing.
        files.write_json_atomic(tmp_path / files.STARTED, {**started, "create_time": time.time()})
        assert task_listener(tmp_path, port) is None
    finally:
        other.close()
        main.kill()
        for child in psutil.Process().children(recursive=True):
            child.kill()
        main.wait()
