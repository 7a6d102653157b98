"""A long-lived launcher that forks task supervisors: a task's start costs a ``fork``, not a
Python start-up.

A fresh ``python -m virtuai.drivers.local.supervisor`` costs about 0.1 s of CPU (the
interpreter and its imports) before it does anything; on a 2-core machine that alone caps
the local driver near 15 task starts per second, whatever the control plane does.  The
launcher is that Python start-up paid once: a process started by the driver
(``COMMAND``) imports the supervisor and then, for each task directory it reads on standard
input (one per line), forks a child that runs exactly what the supervisor's ``main`` runs,
and answers ``<exit code> <task dir>`` on standard output when that child (the supervisor's
short-lived first process) exits.

Nothing about a task's safety depends on the launcher: the supervisors it forks are
detached exactly as before (own session, double fork, claim of ``supervisor.pid``), so the
launcher can die at any moment -- with the server, which holds the other end of its
standard input, or alone -- and the tasks go on.  A task the launcher took but never
answered for is launched again by the driver as a fresh process (launching is idempotent:
one supervisor claims a task, a second one exits).  The launcher also leaves after
``IDLE_S`` without work.  It is single-threaded, which is what makes its ``fork`` safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from virtuai.drivers.local import supervisor
from virtuai.host import files

log = logging.getLogger(__name__)

# Started as ``python -c`` rather than ``-m``: the package imports this module first, and
# runpy warns about a module run as ``__main__`` that is already imported.
COMMAND = "from virtuai.drivers.local.launcher import main; main()"
IDLE_S = 60.0


# -- the launcher process ----------------------------------------------------------------------


def main(idle_s: float = IDLE_S) -> None:
    """Read task directories, fork a supervisor for each, report the first processes' exits.

    Leaves when its standard input closes (the server is gone) or after ``idle_s`` without
    work; a line the launcher did not take before it left is launched again by the driver
    (launching is idempotent: one supervisor claims a task).
    """
    _load_name_services()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # only to wake the select below
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server ends us by closing our stdin
    children: dict[int, str] = {}
    pending = b""
    stdin = sys.stdin.fileno()
    out = sys.stdout
    open_input = True
    idle_since = time.monotonic()
    while open_input or children:
        if not children and time.monotonic() - idle_since > idle_s:
            return
        try:
            readable, _, _ = select.select([stdin, wake_r] if open_input else [wake_r], [], [], 1.0)
        except InterruptedError:
            readable = []
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        if stdin in readable:
            idle_since = time.monotonic()
            data = os.read(stdin, 65536)
            if not data:
                open_input = False  # the server is gone: report nothing more, reap and leave
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                task_dir = line.decode()
                if task_dir:
                    children[_fork_supervisor(task_dir, (wake_r, wake_w))] = task_dir
        for pid, code in _reaped():
            task_dir = children.pop(pid, "")
            if task_dir and open_input:
                with contextlib.suppress(BrokenPipeError):
                    out.write(f"{code} {task_dir}\n")
                    out.flush()


def _load_name_services() -> None:
    """Load the C library's name-service modules (``libnss_*``) once, here: every task's
    start looks up its user's groups, and a fork of a process that has them loaded does
    not load them again (a fresh child did, from disk, for every task)."""
    with contextlib.suppress(KeyError, OSError):
        os.getgrouplist(pwd.getpwuid(0).pw_name, 0)


def _reaped() -> list[tuple[int, int]]:
    """Children that have exited, with their exit codes (``EXIT_ERROR`` if killed)."""
    done: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        code = os.waitstatus_to_exitcode(status)
        done.append((pid, code if code >= 0 else files.EXIT_ERROR))


def _fork_supervisor(task_dir: str, own_fds: tuple[int, int]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    try:  # pragma: no cover - the child, measured by the driver's tests
        # The child is what a fresh ``python -m ...supervisor TASK_DIR`` would be: default
        # signal handling, nothing of the launcher's pipes, stderr into supervisor.log.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for fd in own_fds:
            os.close(fd)
        log_path = Path(task_dir) / files.SUPERVISOR_LOG
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(log_fd, 0o600)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(log_fd, 2)
        os.close(null)
        os.close(log_fd)
        os.chdir("/")
        supervisor.main([task_dir])
    finally:
        os._exit(files.EXIT_ERROR)


# -- the driver's side -------------------------------------------------------------------------


class Launcher:
    """The server's handle on one launcher process, started at the first launch.

    ``launch(task_dir, done)`` hands the task to the launcher and returns ``True``; ``done``
    is called later (in the reader thread) with the first process's exit code, or with
    ``None`` if the launcher died first.  ``False`` means no launcher could take it: the
    caller starts a fresh supervisor process instead.
    """

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._env = env
        self._log_path = log_path
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        # Task dirs handed to a launcher and not answered yet, with that launcher.
        self._waiting: dict[str, tuple[subprocess.Popen[bytes], Callable[[int | None], None]]] = {}

    def launch(self, task_dir: Path, done: Callable[[int | None], None]) -> bool:
        key = str(task_dir)
        if "\n" in key:
            return False
        with self._lock:
            proc = self._running()
            if proc is None or proc.stdin is None:
                return False
            self._waiting[key] = (proc, done)
            try:
                proc.stdin.write(f"{key}\n".encode())
                proc.stdin.flush()
            except OSError:
                self._waiting.pop(key, None)
                return False
        return True

    @property
    def pid(self) -> int | None:
        """The running launcher's pid, if one runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def _running(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        try:
            with open(self._log_path, "ab") as log_file:
                os.chmod(self._log_path, 0o600)
                proc = subprocess.Popen(
                    [sys.executable, "-c", COMMAND],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    cwd="/",
                    env=self._env,
                    # Not in the server's process group: a Ctrl-C meant for the server does
                    # not reach it; it leaves when the server closes its standard input.
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            log.warning("local driver: cannot start the launcher (%s); a process per task", exc)
            return None
        self._proc = proc
        assert proc.stdout is not None
        threading.Thread(
            target=self._read, args=(proc, proc.stdout), name="virtuai-launcher", daemon=True
        ).start()
        return proc

    def _read(self, proc: subprocess.Popen[bytes], out: IO[bytes]) -> None:
        for raw in out:
            code, _, key = raw.decode().rstrip("\n").partition(" ")
            with self._lock:
                waiting = self._waiting.pop(key, None)
            if waiting is not None:
                waiting[1](int(code))
        proc.wait()
        # The launcher left (idle, or died): what it never answered is reported as such,
        # and the driver launches it again (idempotent).
        with self._lock:
            if self._proc is proc:
                self._proc = None
            orphans = [key for key, (owner, _) in self._waiting.items() if owner is proc]
            callbacks = [self._waiting.pop(key)[1] for key in orphans]
        for done in callbacks:
            done(None)
