"""The local driver against real processes, cgroups and Unix users (no mocks)."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from local_helpers import (
    NODE,
    USER_PREFIX,
    MakeSpec,
    assert_cgroup_gone,
    wait_for,
    wait_result,
    wait_started,
)

from virtuai.domain.resources import Resources
from virtuai.domain.workload import TaskOutcome
from virtuai.drivers.base import Driver, LogStream, StopReason
from virtuai.drivers.local import LocalDriver
from virtuai.errors import DriverError
from virtuai.host.users import ensure_tenant_user, unix_name
from virtuai.settings import LocalDriverSettings

SRC = str(Path(__file__).resolve().parents[3] / "src")


def stdout_of(driver: LocalDriver, handle: dict[str, str]) -> str:
    return driver.read_log(handle, LogStream.STDOUT, 0, 1 << 20).decode()


def test_is_a_driver(driver: LocalDriver) -> None:
    checked: Driver = driver
    assert checked.name == "local"


def test_exit_zero_with_output(driver: LocalDriver, make_spec: MakeSpec) -> None:
    spec = make_spec(["sh", "-c", "echo hello; echo oops >&2"])
    handle = driver.launch(spec)
    assert json.loads(json.dumps(handle)) == handle
    result = wait_result(driver, handle)
    assert (result.outcome, result.exit_code, result.signal) == (TaskOutcome.EXITED, 0, None)
    assert result.started_at is not None and result.started_at <= result.finished_at
    assert stdout_of(driver, handle) == "hello\n"
    assert driver.read_log(handle, LogStream.STDERR, 0, 100) == b"oops\n"
    assert driver.read_log(handle, LogStream.STDOUT, 2, 2) == b"ll"
    assert driver.read_log(handle, LogStream.STDOUT, 100, 10) == b""
    assert_cgroup_gone(driver, spec.key)


def test_exit_code(driver: LocalDriver, make_spec: MakeSpec) -> None:
    handle = driver.launch(make_spec(["sh", "-c", "exit 3"]))
    result = wait_result(driver, handle)
    assert (result.outcome, result.exit_code) == (TaskOutcome.EXITED, 3)
    assert result.message == "exited with code 3"


def test_command_not_found(driver: LocalDriver, make_spec: MakeSpec) -> None:
    handle = driver.launch(make_spec(["no-such-command-vai"]))
    result = wait_result(driver, handle)
    assert result.outcome == TaskOutcome.LAUNCH_FAILED
    assert result.message == "command not found: no-such-command-vai"
    assert result.started_at is None and result.exit_code is None
    assert b"command not found: no-such-command-vai" in driver.read_log(
        handle, LogStream.STDERR, 0, 1000
    )
    assert not (Path(handle["task_dir"]) / "started.json").exists()


def test_missing_workdir(driver: LocalDriver, make_spec: MakeSpec, workdir: str) -> None:
    missing = os.path.join(workdir, "nope")
    result = wait_result(driver, driver.launch(make_spec(["true"], workdir=missing)))
    assert result.outcome == TaskOutcome.LAUNCH_FAILED
    assert result.message == f"workdir {missing} does not exist"


@pytest.mark.root
def test_workdir_not_accessible_to_tenant(
    driver: LocalDriver, make_spec: MakeSpec, workdir: str, tenant: str
) -> None:
    private = os.path.join(workdir, "private")
    os.mkdir(private, 0o700)  # root's, closed to others
    result = wait_result(driver, driver.launch(make_spec(["true"], workdir=private)))
    assert result.outcome == TaskOutcome.LAUNCH_FAILED
    user = pwd.getpwnam(unix_name(tenant, USER_PREFIX))
    # It says which directory refused the task, and whose it is: what the task was.
    assert result.message == (
        f"workdir {private} is not accessible to user {user.pw_name} "
        f"(uid {user.pw_uid}, gid {user.pw_gid}): {private} is 0:0 mode 700"
    )


def test_walltime_sends_sigterm_then_sigkill(driver: LocalDriver, make_spec: MakeSpec) -> None:
    # The task ignores SIGTERM (after saying it got it), so only SIGKILL ends it.
    script = "trap 'echo got-term' TERM; echo ready; while :; do sleep 0.05; done"
    spec = make_spec(["sh", "-c", script], walltime_s=1, kill_grace_s=1)
    began = time.monotonic()
    handle = driver.launch(spec)
    result = wait_result(driver, handle, timeout=10)
    elapsed = time.monotonic() - began
    assert result.outcome == TaskOutcome.KILLED_WALLTIME
    assert (result.exit_code, result.signal) == (128 + signal.SIGKILL, signal.SIGKILL)
    assert "got-term" in stdout_of(driver, handle)
    assert 2.0 <= elapsed < 6.0
    assert_cgroup_gone(driver, spec.key)


def test_cancel(driver: LocalDriver, make_spec: MakeSpec) -> None:
    spec = make_spec(["sleep", "30"])
    handle = driver.launch(spec)
    started = wait_started(handle)
    assert driver.observe(handle) is None
    driver.stop(handle, StopReason.CANCEL)
    driver.stop(handle, StopReason.CANCEL)  # idempotent
    result = wait_result(driver, handle)
    assert result.outcome == TaskOutcome.KILLED_CANCEL
    assert result.message == "cancelled"
    assert (result.exit_code, result.signal) == (128 + signal.SIGTERM, signal.SIGTERM)
    assert not psutil.pid_exists(started["pid"]) or (
        psutil.Process(started["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    driver.stop(handle, StopReason.CANCEL)  # after the end: nothing happens
    assert driver.observe(handle) == result
    assert_cgroup_gone(driver, spec.key)


# Counts the SIGTERMs it gets; its handler takes a while, as a checkpoint does, so a second
# signal meanwhile would run it again.
_COUNT_TERMS = """
import signal, time
got = []
def on_term(signo, frame):
    got.append(signo)
    time.sleep(0.5)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while not got:
    time.sleep(0.01)
time.sleep(1)
print(f"got {len(got)}", flush=True)
"""


def test_a_stop_signals_each_process_once(driver: LocalDriver, make_spec: MakeSpec) -> None:
    # Slurm signals each process of a step once: a handler that saves a checkpoint, or a
    # shell trap that echoes, must not run twice (the process group's signal and the one
    # for whatever left the group were both sent to the group's members).
    spec = make_spec(["python3", "-c", _COUNT_TERMS], kill_grace_s=5)
    handle = driver.launch(spec)
    wait_for(lambda: "ready" in stdout_of(driver, handle), what="the handler to be set")
    driver.stop(handle, StopReason.CANCEL)
    result = wait_result(driver, handle)
    assert result.outcome == TaskOutcome.KILLED_CANCEL
    assert stdout_of(driver, handle) == "ready\ngot 1\n"


def test_preempt_sends_the_checkpoint_signal_and_keeps_the_real_exit_code(
    driver: LocalDriver, make_spec: MakeSpec
) -> None:
    # Exits by itself, with code 0, within the grace period after its checkpoint signal.
    script = (
        "trap 'echo saving; exit 0' USR1; trap 'echo wrong signal; exit 1' TERM; "
        "echo ready; while :; do sleep 0.05; done"
    )
    spec = make_spec(
        ["sh", "-c", script], kill_grace_s=1, checkpoint_signal=10, checkpoint_grace_s=5
    )
    handle = driver.launch(spec)
    wait_for(lambda: "ready" in stdout_of(driver, handle), what="the trap to be set")
    driver.stop(handle, StopReason.PREEMPT)
    result = wait_result(driver, handle)
    assert result.outcome == TaskOutcome.KILLED_PREEMPT
    assert result.message == "preempted"
    assert (result.exit_code, result.signal) == (0, None)
    assert "saving" in stdout_of(driver, handle)


def test_out_of_memory(driver: LocalDriver, make_spec: MakeSpec) -> None:
    allocate = "import time; x = b'x' * (256 * 2**20); time.sleep(20)"
    spec = make_spec(["python3", "-c", allocate], resources=Resources(1000, 64 * 2**20))
    handle = driver.launch(spec)
    result = wait_result(driver, handle, timeout=15)
    assert result.outcome == TaskOutcome.KILLED_OOM
    assert result.message == "out of memory (limit 64Mi)"
    assert result.signal == signal.SIGKILL
    assert_cgroup_gone(driver, spec.key)


def test_out_of_memory_without_cgroups(
    runtime_dir: Path, settings: LocalDriverSettings, make_spec: MakeSpec
) -> None:
    """The documented degrade: RSS of the task's process tree polled and killed at the limit."""
    driver = LocalDriver(runtime_dir, settings, node_name=NODE)
    driver.cgroups = None  # as on a machine where cgroups are not writable
    allocate = "import time; x = b'x' * (256 * 2**20); time.sleep(20)"
    handle = driver.launch(
        make_spec(["python3", "-c", allocate], resources=Resources(1000, 64 * 2**20))
    )
    result = wait_result(driver, handle, timeout=15)
    assert result.outcome == TaskOutcome.KILLED_OOM
    record = json.loads((Path(handle["task_dir"]) / "result.json").read_text())
    assert record["limits"] == "none"


@pytest.mark.root
def test_cgroup_limits_are_applied(driver: LocalDriver, make_spec: MakeSpec) -> None:
    if driver.cgroups is None:
        pytest.skip("cgroups are not available here")
    spec = make_spec(["sleep", "30"], resources=Resources(cpu_milli=500, memory=128 * 2**20))
    handle = driver.launch(spec)
    started = wait_started(handle)
    assert started["limits"] == driver.cgroups.label
    dirs = [Path(p) for p in started["cgroup_dirs"]]
    assert dirs and all(d.is_dir() for d in dirs)
    wanted = {"cpu.max", "memory.max", "pids.max", "cpu.cfs_quota_us", "memory.limit_in_bytes"}
    values = {f.name: f.read_text().strip() for d in dirs for f in d.iterdir() if f.name in wanted}
    if driver.cgroups.version == 2:
        assert values["cpu.max"] == "50000 100000"
        assert values["memory.max"] == str(128 * 2**20)
        assert values["pids.max"] == "256"
    else:
        assert values["cpu.cfs_quota_us"] == "50000"
        assert values["memory.limit_in_bytes"] == str(128 * 2**20)
        assert values["pids.max"] == "256"
    procs = {int(p) for d in dirs for p in (d / "cgroup.procs").read_text().split()}
    assert started["pid"] in procs
    driver.stop(handle, StopReason.CANCEL)
    wait_result(driver, handle)
    assert not any(d.exists() for d in dirs)


def test_orphans_are_killed_when_the_task_ends(
    driver: LocalDriver, make_spec: MakeSpec, workdir: str
) -> None:
    # A background process that leaves the task's process group and session.
    script = "setsid sleep 30 & echo $! > orphan.pid; exit 0"
    handle = driver.launch(make_spec(["sh", "-c", script]))
    result = wait_result(driver, handle)
    assert (result.outcome, result.exit_code) == (TaskOutcome.EXITED, 0)
    orphan = int(Path(workdir, "orphan.pid").read_text())

    def gone() -> bool:
        try:
            return psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, 2, "the orphan to be killed")


def test_launch_is_idempotent(
    driver: LocalDriver,
    runtime_dir: Path,
    settings: LocalDriverSettings,
    make_spec: MakeSpec,
    workdir: str,
) -> None:
    spec = make_spec(["sh", "-c", "echo run >> runs.txt; sleep 0.3"])
    other = LocalDriver(runtime_dir, settings, node_name=NODE)
    handles: list[dict[str, str]] = []
    threads = [
        threading.Thread(target=lambda d=d: handles.append(d.launch(spec)))
        for d in (driver, other, driver)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handles.append(driver.launch(spec))
    assert len(handles) == 4 and all(h == handles[0] for h in handles)
    result = wait_result(driver, handles[0])
    assert result.outcome == TaskOutcome.EXITED
    assert driver.launch(spec) == handles[0]  # after the end, still nothing new
    assert Path(workdir, "runs.txt").read_text() == "run\n"


def test_task_survives_the_server_being_killed(
    runtime_dir: Path, settings: LocalDriverSettings, make_spec: MakeSpec
) -> None:
    """A server process launches, is SIGKILLed; a new driver observes the task to its end."""
    spec = make_spec(["sh", "-c", "sleep 1; echo survived"])
    server = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        from virtuai.domain.resources import Resources
        from virtuai.drivers.base import TaskSpec
        from virtuai.drivers.local import LocalDriver
        from virtuai.settings import LocalDriverSettings
        settings = LocalDriverSettings.model_validate_json({settings.model_dump_json()!r})
        driver = LocalDriver(Path({str(runtime_dir)!r}), settings, node_name={NODE!r})
        spec = TaskSpec(job_id={spec.job_id!r}, attempt=0, index=0, tenant={spec.tenant!r},
                        command={spec.command!r}, env={{}}, workdir={spec.workdir!r},
                        node={NODE!r}, resources=Resources(1000, 2**28), gpu_indices=(),
                        walltime_s=60, kill_grace_s=1)
        print(json.dumps(driver.launch(spec)), flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", server],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])},
    )
    assert proc.stdout is not None
    handle = json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # launch() does not wait for the supervisor to claim the task: it does so on its own.
    claim_file = Path(handle["task_dir"]) / "supervisor.pid"
    deadline = time.monotonic() + 30
    while not claim_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    claim = json.loads(claim_file.read_text())
    assert psutil.Process(claim["pid"]).ppid() != proc.pid  # detached from the server
    fresh = LocalDriver(runtime_dir, settings, node_name=NODE)
    assert fresh.observe(handle) is None
    result = wait_result(fresh, handle)
    assert (result.outcome, result.exit_code) == (TaskOutcome.EXITED, 0)
    assert stdout_of(fresh, handle) == "survived\n"
    assert_cgroup_gone(fresh, spec.key)


def test_lost_when_the_supervisor_is_killed(driver: LocalDriver, make_spec: MakeSpec) -> None:
    spec = make_spec(["sleep", "30"])
    handle = driver.launch(spec)
    started = wait_started(handle)
    os.kill(started["supervisor_pid"], signal.SIGKILL)
    result = wait_result(driver, handle)
    assert result.outcome == TaskOutcome.LOST
    assert result.message == "supervisor vanished"

    def task_gone() -> bool:
        try:
            return psutil.Process(started["pid"]).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(task_gone, 2, "the task to be killed")
    assert driver.observe(handle) == result  # recorded, stable
    assert_cgroup_gone(driver, spec.key)


def test_lost_when_the_supervisor_never_started(driver: LocalDriver, runtime_dir: Path) -> None:
    task_dir = runtime_dir / "ghost.0.0"
    task_dir.mkdir(parents=True)
    (task_dir / "spec.json").write_text(json.dumps({"key": "ghost.0.0", "created_at": 0}))
    result = driver.observe({"task_dir": str(task_dir), "key": "ghost.0.0"})
    assert result is not None and result.outcome == TaskOutcome.LOST


def test_environment_is_clean(
    driver: LocalDriver, make_spec: MakeSpec, workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIRTUAI_TOKEN", "server-secret")
    spec = make_spec(["env"], env={"RANK": "1", "WORLD_SIZE": "2", "MASTER_PORT": "29500"})
    handle = driver.launch(spec)
    wait_result(driver, handle)
    env = dict(line.split("=", 1) for line in stdout_of(driver, handle).splitlines())
    assert "VIRTUAI_TOKEN" not in env
    assert env["RANK"] == "1" and env["WORLD_SIZE"] == "2" and env["MASTER_PORT"] == "29500"
    assert env["HOME"] == workdir and env["LANG"] == "C.UTF-8"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_cuda_visible_devices(driver: LocalDriver, make_spec: MakeSpec) -> None:
    node = driver.inventory()[0]
    assert node.capacity.gpu == 2 and [g.index for g in node.gpus] == [0, 1]
    spec = make_spec(
        ["sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"'],
        gpu_indices=(0, 1),
        env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"},  # a task cannot widen its own allocation
    )
    handle = driver.launch(spec)
    wait_result(driver, handle)
    assert stdout_of(driver, handle) == "0,1\n"


@pytest.mark.root
def test_runs_as_the_tenant_user(driver: LocalDriver, make_spec: MakeSpec, tenant: str) -> None:
    handle = driver.launch(make_spec(["sh", "-c", "id -u; id -un"]))
    result = wait_result(driver, handle)
    assert result.outcome == TaskOutcome.EXITED
    uid, name = stdout_of(driver, handle).split()
    assert int(uid) != 0
    assert name == unix_name(tenant, USER_PREFIX)
    task_dir = Path(handle["task_dir"])
    # The task's records are the server's; the tenant cannot read or change them.
    assert task_dir.stat().st_uid == 0 and task_dir.stat().st_mode & 0o077 == 0
    assert (task_dir / "spec.json").stat().st_uid == 0


@pytest.mark.root
def test_tenant_user_is_created_once_under_concurrency(tenant: str) -> None:
    results: list[tuple[int, int, str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_tenant_user(tenant, USER_PREFIX)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    uid, gid, name = results[0]
    assert uid != 0 and gid != 0 and name == unix_name(tenant, USER_PREFIX)


def test_release_keeps_the_logs(driver: LocalDriver, make_spec: MakeSpec) -> None:
    spec = make_spec(["echo", "kept"])
    handle = driver.launch(spec)
    wait_result(driver, handle)
    driver.release(handle)
    driver.release(handle)
    assert stdout_of(driver, handle) == "kept\n"
    assert_cgroup_gone(driver, spec.key)


def test_stop_before_the_task_starts_is_honoured(
    driver: LocalDriver, make_spec: MakeSpec, runtime_dir: Path
) -> None:
    spec = make_spec(["sleep", "30"])
    task_dir = runtime_dir / spec.key
    task_dir.mkdir(parents=True)
    (task_dir / "stop.json").write_text(json.dumps({"reason": "cancel"}))
    result = wait_result(driver, driver.launch(spec))
    assert result.outcome == TaskOutcome.KILLED_CANCEL
    assert result.message == "cancelled before it started"


def test_node_names_and_rendezvous(driver: LocalDriver) -> None:
    assert driver.node_names() == frozenset({NODE})
    address, port = driver.rendezvous(NODE)
    assert address == "127.0.0.1" and 0 < port < 65536
    with socket.socket() as probe:
        probe.bind((address, port))  # it was free
    with pytest.raises(DriverError):
        driver.rendezvous("another-node")


def test_default_workspace_is_created_for_the_tenant(
    driver: LocalDriver, make_spec: MakeSpec, workdir: str, tenant: str
) -> None:
    workspace = os.path.join(workdir, "workspaces", tenant)
    spec = make_spec(["sh", "-c", "pwd; touch mine"], workdir=workspace, create_workdir=True)
    handle = driver.launch(spec)
    result = wait_result(driver, handle)
    assert (result.outcome, result.exit_code) == (TaskOutcome.EXITED, 0), result.message
    assert stdout_of(driver, handle) == workspace + "\n"
    info = os.stat(workspace)
    assert info.st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        assert info.st_uid == pwd.getpwnam(unix_name(tenant, USER_PREFIX)).pw_uid
    assert os.path.exists(os.path.join(workspace, "mine"))


def test_launch_refuses_a_task_for_another_node(driver: LocalDriver, make_spec: MakeSpec) -> None:
    with pytest.raises(DriverError):
        driver.launch(make_spec(["true"], node="another-node"))


def test_inventory(driver: LocalDriver) -> None:
    (node,) = driver.inventory()
    assert (node.name, node.site, node.pool) == (NODE, "local", "default")
    assert 0 < node.capacity.cpu_milli <= (os.cpu_count() or 1) * 1000
    assert 0 < node.capacity.memory <= psutil.virtual_memory().total
    assert node.gpus[0].model == "test-gpu" and node.gpus[0].memory == 8 * 2**30


def test_inventory_overrides(runtime_dir: Path, cgroup_name: str) -> None:
    settings = LocalDriverSettings(cpu=0.5, memory=2**30, gpus=[], cgroup_name=cgroup_name)
    (node,) = LocalDriver(runtime_dir, settings, node_name=NODE).inventory()
    assert node.capacity == Resources(cpu_milli=500, memory=2**30, gpu=0)


def test_a_tasks_end_is_reported_without_observing(
    driver: LocalDriver, make_spec: MakeSpec
) -> None:
    """watch_results calls back soon after a launched task ends, so the loops need not poll."""
    ended = threading.Event()
    driver.watch_results(ended.set, period_s=0.02)
    handle = driver.launch(make_spec(["sh", "-c", "sleep 0.3"]))
    assert not ended.wait(0.1)  # still running
    assert ended.wait(30)
    result = driver.observe(handle)
    assert result is not None and result.outcome is TaskOutcome.EXITED


_CREATE = """
import json, sys, time
from pathlib import Path
from virtuai.host import users
made = []
real = users._useradd
def counting(name, tenant):
    proc = real(name, tenant)
    if proc.returncode == 0:
        made.append(name)
    return proc
users._useradd = counting
start = Path(sys.argv[1])
while not start.exists():
    time.sleep(0.001)
accounts = [users.ensure_tenant_user(tenant, sys.argv[2]) for tenant in sys.argv[3:]]
print(json.dumps({"accounts": accounts, "made": made}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd)")
def test_servers_creating_one_tenant_user_at_once_create_it_once(tmp_path: Path) -> None:
    """Processes (as servers on one host are) creating the same new users at the same
    moment: one useradd per user, and every process gets its one uid.  useradd alone is not
    safe: two at once for one name both succeed, the later rewriting the earlier's entry,
    and a gang's tasks on two machines then ran as two uids (issue #9)."""
    prefix = f"tcr{uuid.uuid4().hex[:4]}-"
    tenants = ["a", "b", "c"]
    start = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATE, str(start), prefix, *tenants],
            env={**os.environ, "PYTHONPATH": SRC},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        time.sleep(1.0)  # every process waits for the start
        start.touch()
        outputs = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
        made = sorted(name for out in outputs for name in out["made"])
        assert made == sorted(unix_name(t, prefix) for t in tenants)  # each exactly once
        for index, tenant in enumerate(tenants):
            seen = {tuple(out["accounts"][index]) for out in outputs}
            account = pwd.getpwnam(unix_name(tenant, prefix))
            assert seen == {(account.pw_uid, account.pw_gid, account.pw_name)}
    finally:
        for tenant in tenants:
            subprocess.run(["userdel", unix_name(tenant, prefix)], capture_output=True, check=False)
