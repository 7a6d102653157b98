"""``LocalDriver``: tasks as supervised processes on this machine.

The driver itself keeps no state: everything about a task is in its task
directory ``<runtime_dir>/<task key>/``, written by the driver (``spec.json``,
``stop.json``) and by the task's supervisor (``supervisor.pid``,
``started.json``, ``result.json``, the logs).  The handle stored by the
control plane is ``{"task_dir": ..., "key": ...}``, so a new server process, or
a new ``LocalDriver``, takes running tasks back from the handle alone.

Stopping is a durable request plus a wake-up: ``stop()`` writes ``stop.json``
(``{"reason": "cancel" | "preempt"}``) and sends the supervisor SIGTERM
(cancel) or SIGUSR1 (preempt).  The supervisor also polls the file, so a
request made while it is starting is not lost.

Deployment: supervisors are detached from the server (own session, not its children), but a
service manager that kills a whole cgroup on stop (systemd's default
``KillMode=control-group``) kills them with the server, and so does ``mixed`` (its final
SIGKILL goes to whatever is left in the cgroup).  Run the server with ``KillMode=process``
(``deploy/systemd/virtuai.service``) so that restarting it leaves tasks running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import virtuai
from virtuai.domain.resources import Node
from virtuai.domain.workload import TaskOutcome
from virtuai.drivers.base import Handle, LogStream, StopReason, TaskResult, TaskSpec
from virtuai.drivers.local import sandbox
from virtuai.drivers.local.inventory import detect_node, short_hostname
from virtuai.drivers.local.launcher import Launcher
from virtuai.drivers.local.ports import Holder, port_holder, task_listener
from virtuai.drivers.local.records import SupervisorSpec, TaskUser, read_spec, write_spec
from virtuai.errors import DriverError
from virtuai.host import files
from virtuai.host.cgroups import CgroupLayout, Limits, detect_layout
from virtuai.host.processes import kill_group, same_process
from virtuai.host.sandbox import VirtualNode
from virtuai.host.users import current_user, ensure_tenant_user

if TYPE_CHECKING:
    from virtuai.settings import LocalDriverSettings

log = logging.getLogger(__name__)

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A task with no supervisor record yet is "starting" for this long, then "lost".
START_TIMEOUT_S = 10.0
SPAWN_TIMEOUT_S = files.READY_TIMEOUT_S + 5.0
_KEY_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")
_STOP_SIGNALS = {
    StopReason.CANCEL: signal.SIGTERM,
    StopReason.PREEMPT: signal.SIGUSR1,
    StopReason.FENCE: signal.SIGTERM,  # the supervisor reads "fence" in stop.json: no grace
}


class LocalDriver:
    """Runs tasks on this machine, each under its own detached supervisor."""

    name = "local"

    def __init__(
        self, runtime_dir: Path, settings: LocalDriverSettings, node_name: str | None = None
    ) -> None:
        self.runtime_dir = Path(runtime_dir)
        self.settings = settings
        self.node_name = node_name or short_hostname()
        self.is_root = os.geteuid() == 0
        # Task dirs whose supervisor's first process still runs (see _spawn_supervisor).
        self._spawning: set[Path] = set()
        self._spawning_lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        # Task dirs seen running, watched for their result (see watch_results).
        self._watched: set[Path] = set()
        self._watcher: threading.Thread | None = None
        # Supervisors are forked by one long-lived launcher (started at the first launch).
        self.launcher = Launcher(supervisor_env(), self.runtime_dir / "launcher.log")
        self.cgroups, reason = detect_layout(settings.cgroup_name)
        if self.cgroups is not None:
            try:
                self.cgroups.prepare()
            except OSError as exc:
                self.cgroups, reason = None, f"cannot set up the parent cgroup: {exc}"
        self._warned_limits = False
        if self.cgroups is None:
            log.warning(
                "local driver: running tasks WITHOUT cgroup limits (%s); memory is enforced by "
                "polling the RSS of each task, CPU and process counts are not limited",
                reason,
            )
        if not self.is_root:
            log.warning(
                "local driver: not root: tasks run as %s without per-tenant isolation",
                current_user()[2],
            )

    # -- the Driver protocol ---------------------------------------------------------------

    def inventory(self) -> list[Node]:
        return [detect_node(self.node_name, self.settings)]

    def node_names(self) -> frozenset[str]:
        return frozenset({self.node_name})

    def rendezvous(self, node: str) -> tuple[str, int]:
        """Loopback and a port free right now: every task of a local gang is on this machine.

        The port is only free when asked (as with ``torchrun``'s own choice):
        another process may take it before task 0 binds it.
        """
        if node != self.node_name:
            raise DriverError(f"node {node} is not offered by the local driver ({self.node_name})")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        return "127.0.0.1", port

    def launch(self, spec: TaskSpec) -> Handle:
        """Start ``spec`` under a new supervisor, unless it was launched already."""
        if not _KEY_RE.match(spec.key):
            raise DriverError(f"task key {spec.key!r} cannot name a directory")
        if spec.node != self.node_name:
            raise DriverError(f"task {spec.key} is for node {spec.node}, not {self.node_name}")
        if not spec.workdir:
            raise DriverError(f"task {spec.key} has no workdir; the control plane must give one")
        task_dir = self.runtime_dir / spec.key
        handle: Handle = {"task_dir": str(task_dir), "key": spec.key}
        if any((task_dir / name).exists() for name in _LAUNCHED_MARKERS):
            return handle
        try:
            self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            task_dir.mkdir(mode=0o700, exist_ok=True)
            # Launches run in parallel: creating a tenant's user and workspace must not race.
            with self._prepare_lock:
                supervisor_spec = self._supervisor_spec(spec)
            write_spec(task_dir, supervisor_spec)
            self._spawn_supervisor(task_dir)
        except OSError as exc:
            raise DriverError(f"cannot launch task {spec.key}: {exc}") from exc
        return handle

    def watch_results(self, on_result: Callable[[], None], period_s: float = 0.02) -> None:
        """Call ``on_result`` soon after any watched task writes its result.

        The control loop observes tasks once a round (every second when idle); a
        finished task should free its slot at once.  Watching is a stat of each
        running task's result file every ``period_s``: cheap, and it needs nothing
        from the supervisor, which may have been started by an earlier server.
        """
        if self._watcher is not None:
            return

        def watch() -> None:
            while True:
                time.sleep(period_s)
                with self._spawning_lock:
                    watched = list(self._watched)
                done = [d for d in watched if (d / files.RESULT).exists()]
                if done:
                    with self._spawning_lock:
                        self._watched.difference_update(done)
                    on_result()

        self._watcher = threading.Thread(target=watch, name="virtuai-results", daemon=True)
        self._watcher.start()

    def observe(self, handle: Handle) -> TaskResult | None:
        task_dir = _task_dir(handle)
        result = self._observe(task_dir)
        with self._spawning_lock:
            if result is None:
                self._watched.add(task_dir)
            else:
                self._watched.discard(task_dir)
        return result

    def _observe(self, task_dir: Path) -> TaskResult | None:
        result = files.read_json(task_dir / files.RESULT)
        if result is not None:
            self._warn_if_unlimited(result)
            return _to_result(result)
        alive = supervisor_alive(task_dir)
        if alive:
            return None
        # The supervisor may have written its result and exited since the first look.
        result = files.read_json(task_dir / files.RESULT)
        if result is not None:
            return _to_result(result)
        spec = read_spec(task_dir)
        if spec is None:
            return TaskResult(
                TaskOutcome.LOST, None, None, time.time(), "task directory missing or unreadable"
            )
        with self._spawning_lock:
            spawning = task_dir in self._spawning
        if alive is None and (spawning or time.time() - spec.created_at < START_TIMEOUT_S):
            return None  # the supervisor is still starting
        return self._record_lost(task_dir, spec)

    def stop(self, handle: Handle, reason: StopReason) -> None:
        task_dir = _task_dir(handle)
        if (task_dir / files.RESULT).exists() or not task_dir.is_dir():
            return
        files.write_json_atomic(
            task_dir / files.STOP, {"reason": reason.value, "requested_at": time.time()}
        )
        pid = supervisor_pid(task_dir)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, _STOP_SIGNALS[reason])
        else:
            self.observe(handle)  # a vanished supervisor: record LOST and kill what is left

    def read_log(self, handle: Handle, stream: LogStream, offset: int, limit: int) -> bytes:
        path = _task_dir(handle) / (files.STDOUT if stream == LogStream.STDOUT else files.STDERR)
        if limit <= 0:
            return b""
        try:
            with open(path, "rb") as f:
                if offset >= os.fstat(f.fileno()).st_size:
                    return b""  # also past what the file system can seek to (EINVAL)
                f.seek(max(0, offset))
                return f.read(limit)
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise DriverError(f"cannot read the {stream} of {path.parent.name}: {exc}") from exc

    def listener(self, handle: Handle, port: int) -> str | None:
        """Where the task itself listens on ``port`` (``drivers.base.PortReach``)."""
        return task_listener(_task_dir(handle), port)

    def port_holder(self, handle: Handle, port: int) -> Holder:
        """Whether only the task's own processes listen on ``port`` (a replica's probe)."""
        return port_holder(_task_dir(handle), port)

    def release(self, handle: Handle) -> None:
        """Remove cgroup leftovers of an ended task; logs and records stay."""
        task_dir = _task_dir(handle)
        if supervisor_alive(task_dir):
            return  # it cleans up after itself
        spec = read_spec(task_dir)
        if spec is not None and spec.cgroup:
            cgroup = CgroupLayout.from_json(dict(spec.cgroup)).task(spec.key)
            if cgroup.exists() and not cgroup.remove():
                log.warning("could not remove the cgroup of task %s", spec.key)
        if spec is not None and spec.image:
            sandbox.remove(task_dir)  # the upper layer of its root: the image is not touched

    # -- helpers ---------------------------------------------------------------------------

    def _warn_if_unlimited(self, result: Mapping[str, Any]) -> None:
        """Say once if a task ran without the cgroup limits this driver meant to apply."""
        if self.cgroups is None or self._warned_limits or result.get("limits") != "none":
            return
        if result.get("outcome") in (TaskOutcome.LAUNCH_FAILED.value, TaskOutcome.LOST.value):
            return
        self._warned_limits = True
        log.warning(
            "local driver: a task ran WITHOUT cgroup limits (%s); see its supervisor.log",
            result.get("limits_note") or "unknown reason",
        )

    def _supervisor_spec(self, spec: TaskSpec) -> SupervisorSpec:
        vnode = self._vnode_of(spec)
        user: TaskUser | None = None
        if self.is_root:
            uid, gid, name = ensure_tenant_user(
                spec.run_as or spec.tenant, self.settings.user_prefix
            )
            user = TaskUser(uid, gid, name)
            account = name
        else:
            uid, gid, account = current_user()
        if spec.create_workdir and spec.workdir and vnode is None:
            _create_workdir(Path(spec.workdir), uid, gid)
        return SupervisorSpec(
            key=spec.key,
            created_at=time.time(),
            command=tuple(spec.command),
            env=task_env(spec.env, spec.workdir or "/", account, spec.gpu_indices),
            workdir=spec.workdir or "/",
            user=user,
            cgroup=dict(vnode.cgroup)
            if vnode is not None
            else (self.cgroups.to_json() if self.cgroups is not None else None),
            limits=Limits(
                cpu_milli=spec.resources.cpu_milli,
                memory=spec.resources.memory,
                pids=self.settings.max_pids,
            ),
            walltime_s=spec.walltime_s,
            kill_grace_s=max(0, spec.kill_grace_s),
            checkpoint_signal=spec.checkpoint_signal,
            checkpoint_grace_s=max(
                0,
                spec.kill_grace_s if spec.checkpoint_grace_s is None else spec.checkpoint_grace_s,
            ),
            gpu_indices=tuple(spec.gpu_indices),
            job_id=spec.job_id,
            tenant=spec.tenant,
            vnode=None if vnode is None else vnode.to_json(),
            image=self._image_of(spec, vnode),
        )

    def _image_of(self, spec: TaskSpec, vnode: VirtualNode | None) -> dict[str, Any] | None:
        if spec.image is None:
            return None
        if vnode is not None:
            raise DriverError(f"task {spec.key}: a task in a virtual node runs on its image")
        if not self.is_root:
            raise DriverError(f"task {spec.key}: running over image {spec.image.name} needs root")
        if not spec.workdir:
            raise DriverError(f"task {spec.key}: a task over an image needs a workdir to bind")
        image = spec.image
        return {
            "name": image.name,
            "root": image.root,
            "keepalive": image.keepalive,
            "binds": list(image.binds),
        }

    def _vnode_of(self, spec: TaskSpec) -> VirtualNode | None:
        """The virtual node the task runs in, checked; ``None`` for a plain task."""
        vnode = spec.vnode
        if vnode is None:
            return None
        if not self.is_root:
            raise DriverError(f"task {spec.key}: running tasks in virtual nodes needs root")
        if not same_process(vnode.init_pid, vnode.init_create_time):
            raise DriverError(f"task {spec.key}: virtual node {vnode.hostname} is not running")
        return vnode

    def _spawn_supervisor(self, task_dir: Path) -> None:
        """Start the supervisor; its short-lived first process is reaped without waiting.

        Through the launcher (``launcher.py``: a fork of a process that has the supervisor
        imported, a few milliseconds) when it runs, else as a fresh Python process.
        """
        # Not awaited here: the first process lives until the supervisor has claimed the
        # task, and waiting would hold the control loop for every task launched.  observe()
        # already treats an unclaimed task dir as "still starting" for START_TIMEOUT_S, and a
        # stop request waits in the STOP file.
        with self._spawning_lock:
            self._spawning.add(task_dir)
            self._watched.add(task_dir)
        log_path = task_dir / files.SUPERVISOR_LOG

        def answered(code: int | None) -> None:
            if code is None:  # the launcher left first: launch again (idempotent)
                try:
                    self._spawn_process(task_dir, log_path)  # in _spawning until reaped
                    return
                except OSError as exc:
                    log.warning("cannot start the supervisor of %s: %s", task_dir.name, exc)
            else:
                _first_process_exited(code, task_dir, log_path)
            with self._spawning_lock:
                self._spawning.discard(task_dir)

        if self.launcher.launch(task_dir, answered):
            return
        try:
            self._spawn_process(task_dir, log_path)
        except BaseException:
            with self._spawning_lock:
                self._spawning.discard(task_dir)
            raise

    def _spawn_process(self, task_dir: Path, log_path: Path) -> None:
        """A fresh ``python -m ...supervisor TASK_DIR``, its first process reaped in a thread."""
        with self._spawning_lock:
            self._spawning.add(task_dir)
        with open(log_path, "ab") as log_file:
            os.chmod(log_path, 0o600)
            proc = subprocess.Popen(
                [sys.executable, "-m", files.SUPERVISOR_MODULE, str(task_dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                cwd="/",
                env=supervisor_env(),
                start_new_session=True,
                close_fds=True,
            )

        def reap() -> None:
            try:
                _reap_first_process(proc, task_dir, log_path)
            finally:
                with self._spawning_lock:
                    self._spawning.discard(task_dir)

        threading.Thread(target=reap, name=f"reap-{task_dir.name}", daemon=True).start()

    def close(self) -> None:
        """Let the launcher go (tasks and their supervisors are not touched)."""
        self.launcher.close()

    def _record_lost(self, task_dir: Path, spec: SupervisorSpec) -> TaskResult:
        """The supervisor is gone without a result: kill what is left and say so, durably."""
        started = files.read_json(task_dir / files.STARTED)
        if started is not None:
            kill_group(int(started["pgid"]), started.get("create_time"))
        if spec.cgroup:
            cgroup = CgroupLayout.from_json(dict(spec.cgroup)).task(spec.key)
            cgroup.remove()
        message = (
            "supervisor vanished" if started else "supervisor vanished before the task started"
        )
        result = {
            "outcome": TaskOutcome.LOST.value,
            "exit_code": None,
            "signal": None,
            "started_at": started.get("started_at") if started else None,
            "finished_at": time.time(),
            "message": message,
        }
        # Written so that every later observe() answers the same.
        files.write_json_atomic(task_dir / files.RESULT, result)
        log.warning("task %s lost: %s", spec.key, message)
        return _to_result(result)


_LAUNCHED_MARKERS = (files.SUPERVISOR_PID, files.STARTED, files.RESULT)


def supervisor_env() -> dict[str, str]:
    """Only what it takes to import virtuai and its dependencies: the server's environment
    may hold secrets, and the supervisor (and its launcher) needs none of it."""
    python_path = [str(Path(virtuai.__file__).resolve().parent.parent)]
    python_path += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PATH": BASE_PATH, "LANG": "C.UTF-8", "PYTHONPATH": os.pathsep.join(python_path)}


def _reap_first_process(proc: subprocess.Popen[bytes], task_dir: Path, log_path: Path) -> None:
    """Reap the supervisor's first process (a fresh process, not the launcher's child)."""
    try:
        code: int | None = proc.wait(timeout=SPAWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    _first_process_exited(code, task_dir, log_path)


def _first_process_exited(code: int | None, task_dir: Path, log_path: Path) -> None:
    """If the supervisor never claimed the task, record the launch as failed at once (rather
    than LOST after START_TIMEOUT_S); ``None``: the first process did not end in time."""
    if code in (files.EXIT_STARTED, files.EXIT_ALREADY):
        return
    why = "did not start in time" if code is None else f"failed to start (exit {code})"
    message = f"the supervisor of {task_dir.name} {why}: {_tail(log_path)}"
    log.warning("%s", message)
    if any((task_dir / name).exists() for name in _LAUNCHED_MARKERS):
        return  # it claimed the task after all, or another supervisor did
    with contextlib.suppress(OSError):
        files.write_json_atomic(
            task_dir / files.RESULT,
            {
                "outcome": TaskOutcome.LAUNCH_FAILED.value,
                "exit_code": None,
                "signal": None,
                "started_at": None,
                "finished_at": time.time(),
                "message": message,
            },
        )


def _create_workdir(path: Path, uid: int, gid: int) -> None:
    """Make a tenant's default workspace if missing: ``0700``, owned by the tenant's user.

    Missing parents are created as the server's (``0755`` with the usual umask)
    so the tenant can reach its workspace; an existing directory is left alone.
    Made and given away in one step (``files.create_owned_dir``): the tasks of a gang
    on several machines share the workspace, and one launched while another machine
    had made the directory but not yet given it away found it root's and failed.
    """
    try:
        files.create_owned_dir(path, uid if os.geteuid() == 0 else None, gid)
    except OSError as exc:
        raise DriverError(f"cannot create the workdir {path}: {exc.strerror}") from None


def task_env(
    env: Mapping[str, str], workdir: str, user: str, gpu_indices: tuple[int, ...]
) -> dict[str, str]:
    """A clean environment: a minimal base, the task's own variables, and its GPUs.

    Never the server's environment, which may hold secrets (``VIRTUAI_TOKEN``).
    ``CUDA_VISIBLE_DEVICES`` is set last, and empty when no GPU was allocated, so
    that a task sees exactly its devices; ``CUDA_DEVICE_ORDER`` makes CUDA number
    them as NVML (and the inventory) does.
    """
    result = {"PATH": BASE_PATH, "HOME": workdir, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8"}
    result.update({str(k): str(v) for k, v in env.items()})
    result["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_indices)
    result["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return result


def supervisor_pid(task_dir: Path) -> int | None:
    """The pid of the task's supervisor if that very process still runs, else ``None``."""
    claim = files.read_json(task_dir / files.SUPERVISOR_PID)
    if claim is None:
        return None
    pid = int(claim["pid"])
    return pid if same_process(pid, claim.get("create_time")) else None


def supervisor_alive(task_dir: Path) -> bool | None:
    """``True``/``False``; ``None`` when no supervisor has claimed the task (yet)."""
    if not (task_dir / files.SUPERVISOR_PID).exists():
        return None
    return supervisor_pid(task_dir) is not None


def _to_result(data: Mapping[str, Any]) -> TaskResult:
    return TaskResult(
        outcome=TaskOutcome(data["outcome"]),
        exit_code=data.get("exit_code"),
        started_at=data.get("started_at"),
        finished_at=float(data.get("finished_at") or time.time()),
        message=str(data.get("message") or ""),
        signal=data.get("signal"),
    )


def _task_dir(handle: Handle) -> Path:
    try:
        return Path(str(handle["task_dir"]))
    except (KeyError, TypeError):
        raise DriverError(f"not a local driver handle: {handle!r}") from None


def _tail(path: Path, size: int = 2000) -> str:
    try:
        data = path.read_bytes()[-size:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()


__all__ = ["LocalDriver", "task_env"]
