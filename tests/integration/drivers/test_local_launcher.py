"""Supervisors forked by the local driver's launcher: real processes, real kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from local_helpers import MakeSpec, wait_for, wait_result

from virtuai.domain.workload import TaskOutcome
from virtuai.drivers.local import LocalDriver
from virtuai.drivers.local.launcher import COMMAND

SRC = str(Path(__file__).resolve().parents[3] / "src")


def _claim(handle: dict[str, str]) -> dict[str, int]:
    path = Path(handle["task_dir"]) / "supervisor.pid"
    wait_for(path.exists, 10, "the supervisor's claim")
    claim: dict[str, int] = json.loads(path.read_text())
    return claim


def test_a_supervisor_is_a_fork_of_the_launcher(driver: LocalDriver, make_spec: MakeSpec) -> None:
    handle = driver.launch(make_spec(["sh", "-c", "sleep 0.5; echo ran"]))
    supervisor = psutil.Process(_claim(handle)["pid"])
    # A fork keeps its parent's command line: this supervisor is no fresh interpreter.
    assert supervisor.cmdline()[-1] == COMMAND
    assert driver.launcher.pid is not None
    assert supervisor.ppid() != driver.launcher.pid  # detached: not the launcher's child
    result = wait_result(driver, handle)
    assert (result.outcome, result.exit_code) == (TaskOutcome.EXITED, 0)


def test_a_task_the_launcher_took_but_never_answered_for_runs_once(
    driver: LocalDriver, make_spec: MakeSpec, workdir: str
) -> None:
    wait_result(driver, driver.launch(make_spec(["true"])))  # the launcher is up
    pid = driver.launcher.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it cannot read the next task...
    handle = driver.launch(make_spec(["sh", "-c", "echo run >> runs.txt"]))
    os.kill(pid, signal.SIGKILL)  # ...and dies with it in its pipe
    result = wait_result(driver, handle, timeout=30)
    assert (result.outcome, result.exit_code) == (TaskOutcome.EXITED, 0)
    assert Path(workdir, "runs.txt").read_text() == "run\n"
    # The next launch starts a new launcher.
    again = driver.launch(make_spec(["true"]))
    assert wait_result(driver, again).outcome == TaskOutcome.EXITED
    assert driver.launcher.pid not in (None, pid)


def test_a_launch_after_the_launcher_was_killed_still_runs(
    driver: LocalDriver, make_spec: MakeSpec
) -> None:
    wait_result(driver, driver.launch(make_spec(["true"])))
    pid = driver.launcher.pid
    assert pid is not None
    launcher = psutil.Process(pid)  # before the kill: the driver may reap it at once
    os.kill(pid, signal.SIGKILL)
    launcher.wait(10)
    handles = [driver.launch(make_spec(["true"])) for _ in range(5)]
    for handle in handles:
        result = wait_result(driver, handle, timeout=30)
        assert (result.outcome, result.exit_code) == (TaskOutcome.EXITED, 0)


def test_the_launcher_leaves_with_the_server_and_when_idle(
    driver: LocalDriver, make_spec: MakeSpec
) -> None:
    wait_result(driver, driver.launch(make_spec(["true"])))
    pid = driver.launcher.pid
    assert pid is not None
    launcher = psutil.Process(pid)
    driver.close()  # the server's end of its pipe closes, as when the server dies
    launcher.wait(10)
    idle = subprocess.Popen(
        [sys.executable, "-c", COMMAND.replace("main()", "main(0.2)")],
        stdin=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert idle.wait(timeout=30) == 0  # its pipe still open: it left for want of work
    assert idle.stdin is not None
    idle.stdin.close()
