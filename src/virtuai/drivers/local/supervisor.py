"""The per-task supervisor: ``python -m virtuai.drivers.local.supervisor TASK_DIR``.

Like Slurm's slurmstepd or Podman's conmon, one small process per task owns
the task's life so that the server does not have to: the server may be
killed (even with SIGKILL) and restarted, and the task keeps running and its
ending is still recorded, because the supervisor is detached from the server
(double fork into a session of its own, reparented away from the server) and
writes everything down in ``TASK_DIR``.

Life of a supervisor (file names in :mod:`virtuai.host.files`):

1. The driver has written ``spec.json``.  The first process (the one the
   driver spawned) forks the real supervisor and exits as soon as that has
   claimed ``supervisor.pid`` (exit 0), or found it claimed by another (exit 3:
   launching twice starts nothing twice), so the driver reaps it at once.
2. The supervisor creates the task's cgroup and writes the limits; when that
   is impossible the task runs without ("limits": "none" in the records) and
   memory is watched by polling the RSS of the task's process tree instead.
3. It forks the task: the child joins the cgroup, becomes leader of a new
   session (so one signal to its process group reaches all its processes),
   takes stdout/stderr from the log files opened by the supervisor, switches
   to the tenant's user, enters the workdir and execs the command.  Failures
   up to ``exec`` come back through a close-on-exec pipe and end the task as
   ``launch_failed`` with a plain message (also appended to ``stderr.log``).
4. ``started.json`` is written; the supervisor then waits for, in one loop:
   the task's exit, the walltime, and stop requests (``stop.json`` plus
   SIGTERM = cancel or SIGUSR1 = preempt as a wake-up).  A cancel sends SIGTERM
   to the task's process group and SIGKILL to everything of the task
   ``kill_grace_s`` later; a preemption sends the job's checkpoint signal
   instead and waits ``checkpoint_grace_s``.
5. When the task has exited: what is left of it is killed (processes that left
   the process group are still in the cgroup, or are children of the
   supervisor, which is a child subreaper), the OOM counter is read, the
   cgroup removed, and ``result.json`` written atomically, last.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

import psutil

from virtuai.domain.units import format_memory
from virtuai.domain.workload import TaskOutcome
from virtuai.drivers.base import FENCE_MESSAGE
from virtuai.drivers.local import sandbox
from virtuai.drivers.local.records import RecordError, SupervisorSpec
from virtuai.host import files
from virtuai.host.cgroups import CgroupLayout, Limits, TaskCgroup
from virtuai.host.devices import gpu_devices
from virtuai.host.processes import create_time, same_process

log = logging.getLogger("virtuai.supervisor")

STOP_SIGNALS = {signal.SIGTERM: "cancel", signal.SIGINT: "cancel", signal.SIGUSR1: "preempt"}
WATCHED = {signal.SIGCHLD, signal.SIGHUP, *STOP_SIGNALS}
TICK_S = 0.5  # stop file and RSS polling period
_PR_SET_CHILD_SUBREAPER = 36
# Namespaces of a virtual node a task enters (the mount namespace last: it changes the root).
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNS = 0x20000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
_VNODE_NAMESPACES = (
    ("ipc", 0x08000000),
    ("uts", 0x04000000),
    ("net", 0x40000000),
    ("mnt", 0x20000),
)


class LaunchError(Exception):
    """The task could not be started; the message is shown to the user as is."""


def main(argv: list[str] | None = None) -> NoReturn:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m virtuai.drivers.local.supervisor TASK_DIR", file=sys.stderr)
        sys.exit(2)
    task_dir = Path(args[0]).resolve()
    # Blocked from the start, so that a stop request sent while the supervisor
    # is still starting waits for it rather than killing it.
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    if os.getsid(0) != os.getpid():
        with contextlib.suppress(OSError):
            os.setsid()
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:
        os.close(ready_w)
        os._exit(_wait_ready(ready_r))
    os.close(ready_r)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s supervisor[{os.getpid()}] %(levelname)s %(message)s",
    )
    try:
        code = Supervisor(task_dir).run(ready_w)
    except BaseException:
        traceback.print_exc()
        code = files.EXIT_ERROR
    sys.stderr.flush()
    os._exit(code)


def _wait_ready(ready_r: int) -> int:
    """First process: wait for the supervisor's verdict (one byte) and turn it into an exit code."""
    readable, _, _ = select.select([ready_r], [], [], files.READY_TIMEOUT_S)
    verdict = os.read(ready_r, 1) if readable else b""
    return {b"K": files.EXIT_STARTED, b"D": files.EXIT_ALREADY}.get(verdict, files.EXIT_ERROR)


class Supervisor:
    def __init__(self, task_dir: Path) -> None:
        self.dir = task_dir
        self.spec = SupervisorSpec(key=task_dir.name)  # read from spec.json by run()
        self.cgroup: TaskCgroup | None = None
        self.limits_label = "none"
        self.limits_note = ""
        self.pid = 0
        self.started_at: float | None = None
        self.status: int | None = None  # wait status of the task's main process
        self.rusage: Any = None
        self.vnode_fds: dict[str, int] = {}  # namespaces of the virtual node the task runs in
        self.spared: frozenset[int] = frozenset()  # an image sandbox's own processes (see below)

    # -- claiming the task --------------------------------------------------------------

    def run(self, ready_w: int) -> int:
        data = files.read_json(self.dir / files.SPEC)
        try:
            if data is None:
                raise RecordError(f"no readable {files.SPEC} in {self.dir}")
            self.spec = SupervisorSpec.from_json(data)
        except RecordError as exc:
            os.write(ready_w, b"E")
            log.error("%s", exc)
            return files.EXIT_ERROR
        if (self.dir / files.RESULT).exists():
            os.write(ready_w, b"D")
            return files.EXIT_ALREADY
        claim = {
            "pid": os.getpid(),
            "create_time": psutil.Process().create_time(),
            "claimed_at": time.time(),
        }
        # Not fsynced (here nor in started.json): a pid means nothing after a power cut,
        # which ends the task too, and the claim's exclusivity is the link's, not the disk's.
        if not files.link_json_exclusive(self.dir / files.SUPERVISOR_PID, claim, durable=False):
            os.write(ready_w, b"D")
            log.info("another supervisor owns %s; exiting", self.dir)
            return files.EXIT_ALREADY
        os.write(ready_w, b"K")
        os.close(ready_w)
        log.info("supervising task %s", self.spec.key)
        try:
            self.supervise()
        except Exception as exc:
            log.exception("supervisor failed")
            self.kill_everything()
            # Before the fork nothing ran: the task could not be started.
            outcome = TaskOutcome.LOST if self.pid else TaskOutcome.LAUNCH_FAILED
            self.finish(outcome, None, None, f"supervisor error: {exc}")
        return files.EXIT_STARTED

    # -- the task's life ----------------------------------------------------------------

    def supervise(self) -> None:
        _become_subreaper()
        if (self.dir / files.STOP).exists():
            reason = self.stop_reason_from_file("cancel")
            self.finish(_stop_outcome(reason), None, None, _stop_message(reason, started=False))
            return
        out_fd = os.open(self.dir / files.STDOUT, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        err_fd = os.open(self.dir / files.STDERR, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.setup_cgroup()
        self.started_at = time.time()
        started_mono = time.monotonic()
        try:
            self.pid = self.fork_task(out_fd, err_fd)
        except LaunchError as exc:
            os.write(err_fd, f"virtuai: {exc}\n".encode())
            self.started_at = None
            self.finish(TaskOutcome.LAUNCH_FAILED, None, None, str(exc))
            return
        finally:
            os.close(out_fd)
            os.close(err_fd)
        files.write_json_atomic(
            self.dir / files.STARTED,
            {
                "pid": self.pid,
                "pgid": self.pid,
                "create_time": create_time(self.pid),
                "started_at": self.started_at,
                "supervisor_pid": os.getpid(),
                "limits": self.limits_label,
                "limits_note": self.limits_note,
                "cgroup_dirs": [str(p) for p in self.cgroup.dirs()] if self.cgroup else [],
            },
            durable=False,
        )
        self.watch(started_mono)

    def setup_cgroup(self) -> None:
        layout_json = self.spec.cgroup
        if not layout_json:
            self.limits_note = "cgroups are not available to the server"
            return
        layout = CgroupLayout.from_json(layout_json)
        cgroup = layout.task(self.spec.key)
        try:
            layout.prepare()
            cgroup.create(self.limits())
        except OSError as exc:
            log.warning("running without cgroup limits: cannot set up %s: %s", cgroup.dirs(), exc)
            with contextlib.suppress(OSError):
                cgroup.remove()
            self.limits_note = f"cgroup setup failed: {exc}"
            return
        self.cgroup = cgroup
        self.limits_label = layout.label

    def limits(self) -> Limits:
        return self.spec.limits

    def fork_task(self, out_fd: int, err_fd: int) -> int:
        """Start the command; returns its pid once it has exec'd, else raises LaunchError."""
        vnode = None if self.spec.vnode is None else dict(self.spec.vnode)
        if self.spec.image:  # a sandbox over an image, entered like a virtual node
            procs = [d / "cgroup.procs" for d in self.cgroup.dirs()] if self.cgroup else []
            try:
                vnode = sandbox.start(
                    self.dir,
                    dict(self.spec.image),
                    self.spec.workdir,
                    procs,
                    gpu_devices(self.spec.gpu_indices),
                )
                self.spared = frozenset(vnode["processes"])
            except sandbox.SandboxError as exc:
                raise LaunchError(str(exc)) from None
        if vnode:
            self.vnode_fds = _open_vnode(vnode)  # and enters its pid namespace
        err_r, err_w = os.pipe()  # close-on-exec: EOF means the exec succeeded
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
            try:
                os.close(err_r)
                self.exec_child(out_fd, err_fd)
            except LaunchError as exc:
                os.write(err_w, str(exc).encode()[:4000])
            except BaseException as exc:
                os.write(err_w, f"cannot start the task: {exc}".encode()[:4000])
            os._exit(127)
        os.close(err_w)
        for fd in self.vnode_fds.values():
            os.close(fd)
        chunks = []
        while chunk := os.read(err_r, 4096):
            chunks.append(chunk)
        os.close(err_r)
        if chunks:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            raise LaunchError(b"".join(chunks).decode(errors="replace"))
        return pid

    def exec_child(self, out_fd: int, err_fd: int) -> NoReturn:  # pragma: no cover - child
        for sig in (*WATCHED, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if self.cgroup is not None:
            try:
                self.cgroup.attach(os.getpid())
            except OSError as exc:
                raise LaunchError(f"cannot join the task's cgroup: {exc}") from None
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.umask(0o022)
        user = self.spec.user
        user_name = user.name if user else _current_user_name()
        # Resolved on the host, before entering a virtual node (never its NSS files as root).
        groups = os.getgrouplist(user_name, user.gid) if user else []
        for name, nstype in _VNODE_NAMESPACES if self.vnode_fds else ():
            _setns(self.vnode_fds[name], nstype, name)
        if user and not self.vnode_fds:  # a virtual node has its own pid namespace and /proc
            _private_proc()
        if user:
            try:
                os.setgroups(groups)
                os.setgid(user.gid)
                os.setuid(user.uid)
            except OSError as exc:
                raise LaunchError(f"cannot switch to user {user_name}: {exc}") from None
        workdir = self.spec.workdir
        try:
            os.chdir(workdir)
        except FileNotFoundError:
            raise LaunchError(f"workdir {workdir} does not exist") from None
        except NotADirectoryError:
            raise LaunchError(f"workdir {workdir} is not a directory") from None
        except PermissionError:
            raise LaunchError(
                f"workdir {workdir} is not accessible to user {user_name} "
                f"(uid {os.getuid()}, gid {os.getgid()}): {_denied_at(workdir)}"
            ) from None
        command = list(self.spec.command)
        if not command or not command[0]:
            raise LaunchError("empty command")
        env = dict(self.spec.env)
        try:
            os.execvpe(command[0], command, env)
        except FileNotFoundError:
            raise LaunchError(f"command not found: {command[0]}") from None
        except PermissionError:
            raise LaunchError(
                f"permission denied: {command[0]} cannot be executed by user {user_name}"
            ) from None
        except OSError as exc:
            raise LaunchError(f"cannot execute {command[0]}: {exc.strerror}") from None

    def watch(self, started_mono: float) -> None:
        """Wait for the task's end, enforcing walltime and stop requests."""
        walltime = self.spec.walltime_s
        grace = self.spec.kill_grace_s
        deadline = started_mono + walltime if walltime > 0 else None
        memory_limit = self.limits().memory
        poll_rss = self.cgroup is None and memory_limit > 0
        stop_reason: str | None = None
        kill_at: float | None = None
        rss_oom = False

        def begin_stop(reason: str) -> None:
            nonlocal stop_reason, kill_at
            stop_reason = reason
            # A preempted task gets its checkpoint signal and grace (Slurm's --signal).
            signo, wait_s = signal.SIGTERM, grace
            if reason == "preempt":
                signo = signal.Signals(self.spec.checkpoint_signal)
                wait_s = self.spec.checkpoint_grace_s
            elif reason == "fence":
                signo, wait_s = signal.SIGKILL, 0  # another attempt may start elsewhere
            log.info("stopping the task (%s): %s, SIGKILL in %ss", reason, signo.name, wait_s)
            self.signal_task(signo)
            kill_at = time.monotonic() + wait_s

        while True:
            now = time.monotonic()
            wait = TICK_S
            if deadline is not None and stop_reason is None:
                wait = min(wait, deadline - now)
            if kill_at is not None:
                wait = min(wait, kill_at - now)
            info = signal.sigtimedwait(WATCHED, max(0.0, wait))
            signo = info.si_signo if info is not None else None
            if stop_reason is None:
                if signo in STOP_SIGNALS:
                    begin_stop(self.stop_reason_from_file(STOP_SIGNALS[signal.Signals(signo)]))
                elif (self.dir / files.STOP).exists():
                    begin_stop(self.stop_reason_from_file("cancel"))
                elif deadline is not None and time.monotonic() >= deadline:
                    begin_stop("walltime")
            self.reap()
            if self.status is not None:
                break
            if kill_at is not None and time.monotonic() >= kill_at:
                log.info("grace period over: SIGKILL")
                self.kill_everything()
                kill_at = None
            if poll_rss and not rss_oom and self.tree_rss() > memory_limit:
                log.info("memory above %s (RSS polling): SIGKILL", format_memory(memory_limit))
                rss_oom = True
                self.kill_everything()
        finished_at = time.time()
        self.kill_everything()
        exit_code, signo = _decode_status(self.status)
        oom_kills = self.cgroup.oom_kills() if self.cgroup is not None else None
        oom = rss_oom or bool(oom_kills)
        limit_text = format_memory(memory_limit)
        if stop_reason == "walltime":
            outcome, message = TaskOutcome.KILLED_WALLTIME, f"reached its walltime of {walltime}s"
        elif stop_reason is not None:
            outcome, message = _stop_outcome(stop_reason), _stop_message(stop_reason, started=True)
        elif oom and exit_code != 0:
            outcome, message = TaskOutcome.KILLED_OOM, f"out of memory (limit {limit_text})"
        else:
            outcome, message = TaskOutcome.EXITED, _exit_message(exit_code, signo)
            if oom:
                message += f"; a process of the task was killed for exceeding {limit_text}"
        usage = {}
        if self.rusage is not None:
            usage = {
                "cpu_seconds": round(self.rusage.ru_utime + self.rusage.ru_stime, 3),
                "max_rss": int(self.rusage.ru_maxrss) * 1024,
            }
        self.finish(outcome, exit_code, signo, message, finished_at=finished_at, usage=usage)

    # -- helpers ---------------------------------------------------------------------------

    def stop_reason_from_file(self, default: str) -> str:
        request = files.read_json(self.dir / files.STOP)
        reason = str(request.get("reason", default)) if request else default
        return reason if reason in ("cancel", "preempt", "fence") else default

    def signal_task(self, sig: int) -> None:
        """``sig`` to the task's process group and to whatever left it (cgroup, descendants),
        once each: a handler that saves a checkpoint, or a shell's trap, must not run twice.
        An image sandbox's own processes get SIGKILL only: a SIGTERM to them would end the
        sandbox, and the task inside with it, before its grace period."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
        spared = self.spared if sig != signal.SIGKILL else frozenset()
        pids = (self.cgroup.procs() if self.cgroup is not None else set()) - spared
        pids |= _descendant_pids() - spared
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if self.pid and os.getpgid(pid) == self.pid:
                    continue  # the group's signal reached it
                os.kill(pid, sig)

    def kill_everything(self) -> None:
        self.signal_task(signal.SIGKILL)
        self.reap()
        if self.cgroup is not None:
            self.cgroup.kill_all()
        self.reap()

    def reap(self) -> None:
        """Collect exited children (orphans too: we are a subreaper), keeping the task's status."""
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.status, self.rusage = status, rusage

    def reap_all(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while _descendant_pids() and time.monotonic() < deadline:
            self.signal_task(signal.SIGKILL)
            self.reap()
            time.sleep(0.02)
        self.reap()

    def tree_rss(self) -> int:
        total = 0
        for proc in _descendants():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def finish(
        self,
        outcome: TaskOutcome,
        exit_code: int | None,
        signo: int | None,
        message: str,
        *,
        finished_at: float | None = None,
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Clean up what is left of the task, then write ``result.json`` (last)."""
        finished_at = time.time() if finished_at is None else finished_at
        if self.pid:
            self.reap_all()
        memory_peak = None
        if self.cgroup is not None:
            memory_peak = self.cgroup.memory_peak()
            if not self.cgroup.remove():
                log.warning("could not remove the cgroup %s", self.cgroup.dirs())
        result = {
            "outcome": outcome.value,
            "exit_code": exit_code,
            "signal": signo,
            "started_at": self.started_at,
            "finished_at": finished_at,
            "message": message,
            "limits": self.limits_label,
            "limits_note": self.limits_note,
            "memory_peak": memory_peak,
            **(usage or {}),
        }
        files.write_json_atomic(self.dir / files.RESULT, result)
        log.info("task ended: %s (%s)", outcome.value, message)


def _decode_status(status: int | None) -> tuple[int | None, int | None]:
    """``(exit_code, signal)``; killed by signal N is exit code 128+N, as shells report it."""
    if status is None:
        return None, None
    if os.WIFSIGNALED(status):
        signo = os.WTERMSIG(status)
        return 128 + signo, signo
    return os.waitstatus_to_exitcode(status), None


def _exit_message(exit_code: int | None, signo: int | None) -> str:
    if signo is not None:
        return f"killed by signal {signal.Signals(signo).name}"
    return f"exited with code {exit_code}"


def _stop_outcome(reason: str) -> TaskOutcome:
    return TaskOutcome.KILLED_PREEMPT if reason == "preempt" else TaskOutcome.KILLED_CANCEL


def _stop_message(reason: str, *, started: bool) -> str:
    if reason == "fence":
        return FENCE_MESSAGE
    text = "preempted" if reason == "preempt" else "cancelled"
    return text if started else f"{text} before it started"


def _descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _descendant_pids() -> set[int]:
    """The pids below this process, from the kernel's own lists of each thread's children
    (``/proc/PID/task/TID/children``): a few small reads, where psutil reads the status of
    every process on the machine (a few milliseconds of CPU per call on a busy host, and a
    task's end makes several calls).  Without those lists (a kernel built without
    ``CONFIG_PROC_CHILDREN``), psutil's walk."""
    found: set[int] = set()
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue  # it exited meanwhile
        except OSError:
            return {proc.pid for proc in _descendants()}
        for tid in threads:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    children = f.read().split()
            except FileNotFoundError:
                if pid == os.getpid():  # our own list is missing: the kernel has none
                    return {proc.pid for proc in _descendants()}
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _current_user_name() -> str:
    try:
        return psutil.Process().username()
    except (psutil.Error, KeyError):
        return str(os.getuid())


def _denied_at(path: str) -> str:
    """The first directory of ``path`` this process may not enter, with its owner and mode
    (read as root's stat would not be: these are what the task itself is refused)."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = os.path.join(current, part)
        if os.access(current, os.X_OK):
            continue
        try:
            info = os.stat(current)
        except OSError as error:
            return f"{current}: {error.strerror}"
        return f"{current} is {info.st_uid}:{info.st_gid} mode {info.st_mode & 0o7777:o}"
    return "every directory on the way may be entered (changed since?)"


def _private_proc() -> None:  # pragma: no cover - runs in the task's child
    """Give the task a /proc of its own mounted with ``hidepid=2``: it sees only processes
    of its own Unix user (its tenant's), never other tenants' nor their command lines.

    A new mount namespace, every mount made private first (so nothing propagates to the
    host's /proc), then a fresh procfs instance over /proc.  Since Linux 5.8 each procfs
    mount has its own options, so the host's /proc is untouched.  Fails closed: a task
    that cannot be hidden from the others is not started.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            error = os.strerror(ctypes.get_errno())
            raise LaunchError(f"cannot hide other tenants' processes ({what}: {error})")

    check(libc.unshare(_CLONE_NEWNS), "unshare")
    check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "private mounts")
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    check(libc.mount(b"proc", b"/proc", b"proc", flags, b"hidepid=2"), "mount /proc")


def _setns(fd: int, nstype: int, what: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        error = os.strerror(ctypes.get_errno())
        raise LaunchError(f"cannot enter the virtual node's {what} namespace: {error}")


def _open_vnode(vnode: dict[str, Any]) -> dict[str, int]:
    """Open the namespaces of a virtual node's init and enter its pid namespace, so that
    the task forked next is born inside; the child enters the others (``exec_child``)."""
    pid, born = int(vnode["init_pid"]), vnode.get("init_create_time")
    where = f"virtual node {vnode.get('hostname', pid)}"
    # A record without a birth time cannot prove the init is still the node's.
    if born is None or not same_process(pid, born):
        raise LaunchError(f"{where} is not running")
    try:
        fds = {
            name: os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            for name in ("pid", "ipc", "uts", "net", "mnt")
        }
    except OSError as exc:
        raise LaunchError(f"cannot open the namespaces of {where}: {exc.strerror}") from None
    if not same_process(pid, born):  # the pid was recycled while we opened its namespaces
        raise LaunchError(f"{where} is not running")
    _setns(fds.pop("pid"), _CLONE_NEWPID, "pid")
    return fds


def _become_subreaper() -> None:
    """Orphans of the task are reparented to us, not to init: we can still find and kill them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        log.info("could not become a child subreaper; orphans are found through the cgroup only")


if __name__ == "__main__":
    main()
