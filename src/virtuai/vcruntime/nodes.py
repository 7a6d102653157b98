"""Node processes: the long-lived init of each virtual node, its cgroup, and ``exec``.

A node's init is started as::

    sh -c '<join the cgroup>; exec "$@"' -- nsenter --net=/run/netns/<netns> -- \\
        bwrap --unshare-pid --unshare-uts --unshare-ipc --hostname <name>-<i> \\
              --bind <merged> / --proc /proc --dev /dev --tmpfs /dev/shm \\
              --bind <shared> /shared --ro-bind <hosts> /etc/hosts ... --cap-drop ALL \\
              -- /usr/bin/sleep 2147483647

The tiny shell moves itself into the node's cgroup *before* anything else is
forked (so every process of the node, and the limits, are there from the
start), ``nsenter`` puts it in the node's netns, and bubblewrap builds the
rest.  bubblewrap's own process is pid 1 inside (it reaps orphans) and
``sleep`` as pid 2 keeps the namespace alive, without privileges
(``--cap-drop ALL``).  Outside, a bwrap "monitor" process waits for it: it
is the server's child (started in a session of its own) and is not needed by
anything: the server may die, the node lives on.

Identity: the init's host pid plus its start time in clock ticks
(``init.json``), so ``exec`` and ``observe`` work from a new server process
and never mistake a recycled pid for the node.

cgroups (from ``host/cgroups.py``)::

    <parent>/<p>-<tag>-<i>/          the node's limits (cpu quota, memory, pids)
        init/                        bwrap and the keep-alive
        exec/                        commands started by VcRuntime.exec
        <task key>/                  tasks the local driver's supervisor runs in the node

The node's own directory holds no process, as cgroup v2 requires of a
parent; the same shape serves v1.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtuai.errors import DriverError
from virtuai.host.cgroups import CgroupLayout, Limits, TaskCgroup
from virtuai.host.files import log_tail
from virtuai.host.processes import same_start, start_ticks
from virtuai.vcruntime import enter, system
from virtuai.vcruntime.network import NETNS_DIR

KEEPALIVE_SECONDS = "2147483647"
INFO_TIMEOUT_S = 15.0
INIT_LEAF = "init"
EXEC_LEAF = "exec"
# Moves the shell into each cgroup.procs given before "--", then execs the rest.
JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"'


@dataclass(frozen=True, slots=True)
class InitRecord:
    """A running node's init, as written to ``init.json``."""

    pid: int  # host pid of bwrap's pid 1 inside the node
    start_ticks: int
    create_time: float  # psutil's view of the same instant (used by the local driver)
    monitor_pid: int
    started_at: float
    limits: Mapping[str, int]
    gpu_indices: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "create_time": self.create_time,
            "monitor_pid": self.monitor_pid,
            "started_at": self.started_at,
            "limits": dict(self.limits),
            "gpu_indices": list(self.gpu_indices),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InitRecord:
        return cls(
            int(data["pid"]),
            int(data["start_ticks"]),
            float(data["create_time"]),
            int(data.get("monitor_pid", 0)),
            float(data.get("started_at", 0)),
            {str(k): int(v) for k, v in (data.get("limits") or {}).items()},
            tuple(int(g) for g in data.get("gpu_indices", ())),
        )

    def alive(self) -> bool:
        return same_start(self.pid, self.start_ticks)


class NodeCgroups:
    """The cgroups of nodes, below the runtime's parent cgroup."""

    def __init__(self, layout: CgroupLayout) -> None:
        self.layout = layout

    def node(self, key: str) -> TaskCgroup:
        return self.layout.task(key)

    def inner(self, key: str) -> CgroupLayout:
        """The layout whose tasks are the node's leaves (``init``, ``exec``, task keys)."""
        return CgroupLayout(self.layout.version, self.layout.roots, f"{self.layout.parent}/{key}")

    def create(self, key: str, limits: Limits) -> None:
        """The node's cgroup with its limits, and its ``init`` and ``exec`` leaves."""
        try:
            self.layout.prepare()
            self.node(key).create(limits)
            inner = self.inner(key)
            inner.prepare()
            for leaf in (INIT_LEAF, EXEC_LEAF):
                inner.task(leaf).create(Limits())
        except OSError as exc:
            raise DriverError(f"cannot create the cgroup {key}: {exc}") from exc

    def procs_files(self, key: str, leaf: str) -> list[Path]:
        return [d / "cgroup.procs" for d in self.inner(key).task(leaf).dirs()]

    def exists(self, key: str) -> bool:
        return self.node(key).exists()

    def children(self, key: str) -> set[str]:
        found: set[str] = set()
        for directory in self.node(key).dirs():
            with contextlib.suppress(OSError):
                found.update(p.name for p in directory.iterdir() if p.is_dir())
        return found

    def procs(self, key: str) -> set[int]:
        pids: set[int] = set()
        inner = self.inner(key)
        for leaf in self.children(key):
            pids |= inner.task(leaf).procs()
        return pids

    def signal_workloads(self, key: str, sig: int) -> None:
        """``sig`` to everything in the node but its init (exec'd commands, tasks)."""
        inner = self.inner(key)
        for leaf in self.children(key) - {INIT_LEAF}:
            inner.task(leaf).signal_all(sig)

    def remove(self, key: str) -> None:
        """Kill what is left in the node's cgroup and delete it, leaves first."""
        inner = self.inner(key)
        for leaf in sorted(self.children(key)):
            if not inner.task(leaf).remove(timeout=5.0):
                raise DriverError(f"cannot remove the cgroup {key}/{leaf}")
        if not self.node(key).remove(timeout=5.0):
            raise DriverError(f"cannot remove the cgroup {key}")

    def list_keys(self) -> set[str]:
        """Names of the node cgroups under the parent (any runtime prefix)."""
        found: set[str] = set()
        for root in set(self.layout.roots.values()):
            with contextlib.suppress(OSError):
                found.update(
                    p.name for p in (Path(root) / self.layout.parent).iterdir() if p.is_dir()
                )
        return found


@dataclass(frozen=True, slots=True)
class Launch:
    """Everything needed to start one node's init."""

    hostname: str
    netns: str
    merged: Path
    shared: Path
    binds: tuple[tuple[Path, str], ...]  # read-only file binds: (host file, path in node)
    devices: tuple[str, ...]
    keepalive: str
    cgroup_procs: tuple[Path, ...]
    log: Path


def bwrap_argv(launch: Launch, info_fd: int) -> list[str]:
    argv = [
        "bwrap",
        "--info-fd", str(info_fd),
        "--unshare-pid", "--unshare-uts", "--unshare-ipc",
        "--hostname", launch.hostname,
        "--bind", str(launch.merged), "/",
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777", "--tmpfs", "/dev/shm",
        "--bind", str(launch.shared), "/shared",
    ]  # fmt: skip
    for source, target in launch.binds:
        argv += ["--ro-bind", str(source), target]
    for device in launch.devices:
        argv += ["--dev-bind", device, device]
    argv += ["--cap-drop", "ALL", "--chdir", "/", "--", launch.keepalive, KEEPALIVE_SECONDS]
    return argv


@dataclass(slots=True)
class Starting:
    """A node whose init was spawned and is not known to be ready yet."""

    launch: Launch
    proc: subprocess.Popen[bytes]
    info_r: int
    info: bytes = b""
    pid: int = 0


def spawn_init(launch: Launch) -> Starting:
    """Start the node's init without waiting (``finish_inits`` waits for many at once)."""
    info_r, info_w = os.pipe()
    argv = [
        "/bin/sh", "-c", JOIN_SCRIPT, "vai-node",
        *(str(p) for p in launch.cgroup_procs), "--",
        "nsenter", f"--net={NETNS_DIR / launch.netns}", "--",
        *bwrap_argv(launch, info_w),
    ]  # fmt: skip
    try:
        with open(launch.log, "ab") as log_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                pass_fds=(info_w,),
                cwd="/",
                env={"PATH": system.BASE_PATH, "LANG": "C.UTF-8"},
                start_new_session=True,
            )
    except OSError as exc:
        os.close(info_r)
        raise DriverError(f"cannot start node {launch.hostname}: {exc}") from exc
    finally:
        os.close(info_w)
    return Starting(launch, proc, info_r)


InitResult = tuple[int, int, subprocess.Popen[bytes]]  # (init pid, start ticks, monitor)


def finish_inits(
    starting: Sequence[Starting], timeout: float = INFO_TIMEOUT_S
) -> list[InitResult | DriverError]:
    """Wait for every spawned init to be ready; a failed one is killed and reported.

    bubblewrap writes the init's pid on ``--info-fd`` at once, but forks the
    keep-alive (pid 2) only when the mounts, the pivot to the new root and
    the hostname are done: a node is ready when its pid 1 has that child.
    """
    deadline = time.monotonic() + timeout
    reading = {s.info_r: s for s in starting}
    try:
        while reading and (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select(list(reading), [], [], left)
            for fd in readable:
                chunk = os.read(fd, 4096)
                if chunk:
                    reading[fd].info += chunk
                else:
                    del reading[fd]
    finally:
        for s in starting:
            os.close(s.info_r)
    for s in starting:
        with contextlib.suppress(ValueError, AttributeError):
            s.pid = int(json.loads(s.info or b"null").get("child-pid", 0))
    waiting = {s.pid: s for s in starting if s.pid}
    ready: set[int] = set()
    while waiting.keys() - ready and time.monotonic() < deadline:
        for pid in list(waiting.keys() - ready):
            state = _readiness(pid, waiting[pid].launch.keepalive)
            if state is True:
                ready.add(pid)
            elif state is False:
                waiting.pop(pid)
        if waiting.keys() - ready:
            time.sleep(0.002)
    results: list[InitResult | DriverError] = []
    for s in starting:
        ticks = start_ticks(s.pid) if s.pid in ready else None
        if ticks is not None:
            results.append((s.pid, ticks, s.proc))
            continue
        with contextlib.suppress(OSError):
            if s.pid:
                os.kill(s.pid, signal.SIGKILL)
            s.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            s.proc.wait(timeout=5)
        results.append(
            DriverError(f"node {s.launch.hostname} did not start: {log_tail(s.launch.log)}")
        )
    return results


def _readiness(pid: int, keepalive: str) -> bool | None:
    """``True``: set up (the keep-alive runs); ``False``: the init died; ``None``: not yet."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return False
    for kid in kids:
        with contextlib.suppress(OSError):
            argv0 = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0", 1)[0]
            if argv0.decode(errors="replace") == keepalive:
                return True
    return None


def kill_init(record: InitRecord | None) -> None:
    """SIGKILL the node's pid 1: the kernel then kills every process of its pid namespace."""
    if record is not None and record.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)


# -- exec ------------------------------------------------------------------------------------


ENTER_ARGV = (sys.executable, "-I", "-S", str(Path(enter.__file__).resolve()))


class NodeProcess(subprocess.Popen[bytes]):
    """A command running in a node, seen through its ``enter.py`` shim.

    Signals sent with ``send_signal``/``terminate`` are forwarded by the shim;
    ``kill`` SIGKILLs the command itself (``command_pid``), so that the shim
    lives on to reap it: a command whose parent died would be adopted by the
    host's init, and the node's pid namespace could not end until that init
    reaped it.
    """

    command_pid: int | None = None

    def kill(self) -> None:
        if self.command_pid is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.command_pid, signal.SIGKILL)
            return
        super().kill()


def spawn_in_node(
    record: InitRecord,
    cgroup_procs: Sequence[Path],
    argv: Sequence[str],
    *,
    uid: int,
    gid: int,
    groups: Sequence[int],
    cwd: str,
    env: Mapping[str, str],
    stdin: Any,
    stdout: Any,
    stderr: Any,
    tty: bool = False,
) -> NodeProcess:
    """Start ``argv`` inside the node through ``enter.py`` (see there)."""
    if not argv:
        raise DriverError("nothing to execute: empty command")
    request = {
        "pid": record.pid,
        "start_ticks": record.start_ticks,
        "cgroup_procs": [str(p) for p in cgroup_procs],
        "uid": uid,
        "gid": gid,
        "groups": list(groups),
        "cwd": cwd,
        "argv": list(argv),
        "env": dict(env),
        "tty": tty,
    }
    req_r, req_w = os.pipe()
    pid_r, pid_w = os.pipe()
    try:
        proc = NodeProcess(
            [*ENTER_ARGV, str(req_r), str(pid_w)],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(req_r, pid_w),
            cwd="/",
            env={"PATH": system.BASE_PATH, "LANG": "C.UTF-8"},
            start_new_session=True,
        )
    except OSError as exc:
        os.close(req_w)
        os.close(pid_r)
        raise DriverError(f"cannot start a command in the node: {exc}") from exc
    finally:
        os.close(req_r)
        os.close(pid_w)
    payload = json.dumps(request).encode()
    try:
        while payload:
            payload = payload[os.write(req_w, payload) :]
    except BrokenPipeError:
        pass  # enter.py died at once; its exit status says why
    finally:
        os.close(req_w)
    try:
        answer = _read_info_line(pid_r, INFO_TIMEOUT_S)
    finally:
        os.close(pid_r)
    proc.command_pid = int(answer) if answer.isdigit() else None
    return proc


def _read_info_line(fd: int, timeout: float) -> str:
    """What a child writes on ``fd`` before closing it (empty on EOF or timeout)."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 64)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()
