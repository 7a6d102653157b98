"""deploy/systemd/virtuai.service: the unit is valid, and what it says keeps running work.

``systemd-analyze verify`` checks the file (PID 1 need not be systemd).  Then the unit is
played by hand as systemd would: its ExecStart with its Environment (the home moved to a
temporary directory), a long job, the unit's KillSignal to the main PID only (what
``KillMode=process`` sends on ``systemctl restart``), a stop within TimeoutStopSec, a start
again, and the job -- its supervisor never stopped -- is still running in its first
attempt and then succeeds.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.platform import TEST_USER_PREFIX, public_dir, remove_state
from support.server import Server
from virtuai.drivers.local.driver import supervisor_pid

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the service runs as root (tenant users)"),
]

UNIT = Path(__file__).parents[2] / "deploy/systemd/virtuai.service"
ENV_FILE = UNIT.with_name("virtuai.env")
VENV_VIRTUAI = Path(sys.executable).parent / "virtuai"


def _unit() -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(UNIT)
    return {name: dict(parser[name]) for name in parser.sections()}


def _environment(service: dict[str, str]) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in shlex.split(service["Environment"]))
    return {key: value for key, value in pairs}


def _command(service: dict[str, str]) -> list[str]:
    """ExecStart with this checkout's venv in place of the install path."""
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/virtuai/.venv/bin/virtuai"  # where scripts/install.sh puts it
    return [str(VENV_VIRTUAI), *argv[1:]]


def test_the_unit_is_what_a_restart_without_losing_work_needs() -> None:
    unit = _unit()
    service = unit["Service"]
    assert service["KillMode"] == "process"  # not the cgroup: the supervisors live in it
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert "User" not in service  # per-tenant users and cgroups need root
    assert _environment(service)["VIRTUAI_HOME"] == "/var/lib/virtuai/server"
    assert service["EnvironmentFile"] == "-/etc/virtuai/virtuai.env"
    assert "postgresql.service" in unit["Unit"]["After"].split()
    # Every setting the example env file names is one the server reads.
    names = [
        line.lstrip("#").split("=", 1)[0]
        for line in ENV_FILE.read_text().splitlines()
        if line.startswith(("#VIRTUAI_", "VIRTUAI_"))
    ]
    assert "VIRTUAI_DATABASE_URL" in names
    for name in names:
        assert name in {"VIRTUAI_HOME", "VIRTUAI_CONFIG"} or _is_setting(name), name


def _is_setting(name: str) -> bool:
    from virtuai.settings import Settings

    path = name.removeprefix("VIRTUAI_").lower().split("__")
    model: type = Settings
    for part in path:
        fields = model.model_fields  # type: ignore[attr-defined]
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's venv.
    text = UNIT.read_text().replace("/opt/virtuai/.venv/bin/virtuai", str(VENV_VIRTUAI))
    copy = tmp_path / "virtuai.service"
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "virtuai.service" not in result.stderr, result.stderr  # no warning about it


@pytest.fixture
def service_server(tmp_path: Path) -> Iterator[Server]:
    workspaces = public_dir("vai-e2e-systemd-ws-")
    tasks_cgroup = f"virtuai-e2esd-{uuid.uuid4().hex[:6]}"
    env = _environment(_unit()["Service"])
    env.pop("VIRTUAI_HOME")  # the test's own, below
    server = Server(
        tmp_path / "home",
        tmp_path / "config",
        {
            **env,
            "VIRTUAI_WORKSPACES": str(workspaces),
            "VIRTUAI_LOCAL__CPU": "2",
            "VIRTUAI_LOCAL__MEMORY": "2Gi",
            "VIRTUAI_LOCAL__KILL_GRACE_S": "1",
            "VIRTUAI_LOCAL__USER_PREFIX": TEST_USER_PREFIX,
            "VIRTUAI_LOCAL__CGROUP_NAME": tasks_cgroup,
            "VIRTUAI_SCHEDULER__INTERVAL_S": "0.2",
        },
    )
    server.env["VIRTUAI_PORT"] = str(server.port)  # as the env file would
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()
    remove_state(workspaces, ["physics"])
    root = Path("/sys/fs/cgroup")
    for parent in [*root.glob(tasks_cgroup), *root.glob(f"*/{tasks_cgroup}")]:
        parent.rmdir()  # empty once the job ended


def _job(server: Server, token: str, job: int) -> dict[str, object]:
    shown: dict[str, object] = server.json("job", str(job), token=token)
    return shown


def _wait_state(server: Server, token: str, job: int, wanted: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = _job(server, token, job)
        if shown["state"] == wanted:
            return shown
        time.sleep(0.2)
    raise AssertionError(f"job {job} never {wanted}: {shown}")


def test_a_restart_as_the_unit_does_it_loses_no_running_job(service_server: Server) -> None:
    server = service_server
    service = _unit()["Service"]
    command = _command(service)
    kill_signal = signal.Signals[service["KillSignal"]]
    stop_timeout = float(service["TimeoutStopSec"])

    server.start(command)
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    server.cli("tenant", "create", "physics", "--cpu", "1", "--memory", "1Gi")
    alice = server.cli("user", "create", "alice", "--tenant", "physics").strip()
    job = int(
        server.cli("submit", "--cpu", "0.5", "--memory", "256Mi", "--", "sleep", "8", token=alice)
    )
    before = _wait_state(server, alice, job, "running")
    # "running" follows the launch, which hands the task to the launcher and returns: its
    # supervisor claims the task a moment later (on a loaded machine, seconds later).
    deadline = time.monotonic() + 30
    while not (claims := list((server.home / "tasks").rglob("supervisor.pid"))):
        assert time.monotonic() < deadline, "no supervisor claimed the task within 30 s"
        time.sleep(0.1)
    assert len(claims) == 1
    task_dir = claims[0].parent
    assert supervisor_pid(task_dir) is not None

    # systemctl restart with KillMode=process: KillSignal to the main PID, nothing else.
    assert server.process is not None
    os.kill(server.process.pid, kill_signal)
    server.process.wait(timeout=stop_timeout)
    assert supervisor_pid(task_dir) is not None  # the task's supervisor went on meanwhile

    server.start(command)
    after = _job(server, alice, job)
    assert after["state"] == "running"
    assert after["task_runs"] == before["task_runs"]  # not requeued: the same run
    assert supervisor_pid(task_dir) is not None
    done = _wait_state(server, alice, job, "succeeded")
    runs = done["task_runs"]
    assert isinstance(runs, list) and len(runs) == 1, runs  # one attempt, run once
    assert runs[0]["exit_code"] == 0
