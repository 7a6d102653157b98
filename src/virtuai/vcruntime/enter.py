"""Run one command inside a virtual node: ``python -I -S enter.py REQUEST_FD PID_FD``.

The runtime's ``exec`` starts this small program (standard library only, so
it starts in milliseconds and imports nothing of the server) with a JSON
request on file descriptor ``REQUEST_FD``; it answers the command's host pid
on ``PID_FD``::

    {"pid": <init pid>, "start_ticks": <its start time>, "cgroup_procs": [...],
     "uid": 1001, "gid": 1001, "groups": [1001], "cwd": "/", "argv": [...], "env": {...},
     "tty": false}

It checks that ``pid`` is still the node's init (not a recycled pid), joins
the node's ``exec`` cgroup, enters the init's pid namespace (for its
children), forks, and the child enters the ipc, uts, net and mount
namespaces, changes directory *inside* the node, drops to the user and
execs the command.  With ``"tty": true`` its standard input is a pseudo-terminal's
slave: the child starts a session of its own with that terminal as the controlling
one (as ``docker exec -t`` does), so that ^C, job control and SIGWINCH work.
Groups are resolved on the host beforehand: nothing
from the node's file system (NSS modules, ``/etc/group``) is ever loaded into
a root process.

The parent stays as a shim: it forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT,
SIGUSR1, SIGUSR2 and SIGWINCH to the command and exits as the command does
(same exit code, or killed by the same signal), so that a ``Popen`` of it
behaves like a ``Popen`` of the command itself.  The command does not outlive
the shim (parent-death signal): ``exec`` is for commands tied to their caller;
long-lived work goes through the local driver's supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import select
import signal
import sys
import termios
from typing import Any, NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
# Entered in this order by the child; the mount namespace last (it changes the root).
CHILD_NAMESPACES = (
    ("ipc", CLONE_NEWIPC),
    ("uts", CLONE_NEWUTS),
    ("net", CLONE_NEWNET),
    ("mnt", CLONE_NEWNS),
)
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
PR_SET_PDEATHSIG = 1
EXIT_CANNOT_ENTER = 125
EXIT_CANNOT_EXEC = 127


def fail(message: str, code: int = EXIT_CANNOT_ENTER) -> NoReturn:
    os.write(2, f"virtuai: {message}\n".encode())
    os._exit(code)


def start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2 :].split()
    if len(rest) < 20 or rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def setns(libc: Any, fd: int, nstype: int, what: str) -> None:
    if libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        fail(f"cannot enter the node's {what} namespace: {os.strerror(err)}")


def main() -> NoReturn:
    if len(sys.argv) != 3:
        fail("usage: enter.py REQUEST_FD PID_FD", 2)
    with os.fdopen(int(sys.argv[1]), "rb") as f:
        request: dict[str, Any] = json.loads(f.read())
    pid_fd = int(sys.argv[2])
    os.set_inheritable(pid_fd, False)
    pid, ticks = int(request["pid"]), request["start_ticks"]
    if start_ticks(pid) != ticks:
        fail("the virtual node is not running (its init is gone)")
    try:
        fds = {
            name: os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            for name in ("pid", "ipc", "uts", "net", "mnt")
        }
    except OSError as exc:
        fail(f"cannot open the node's namespaces: {exc.strerror}")
    if start_ticks(pid) != ticks:  # the pid was recycled between the check and the opens
        fail("the virtual node is not running (its init is gone)")
    for procs in request.get("cgroup_procs", ()):
        try:
            with open(procs, "w") as f:
                f.write("0")
        except OSError as exc:
            fail(f"cannot join the node's cgroup {procs}: {exc.strerror}")
    libc = ctypes.CDLL(None, use_errno=True)
    setns(libc, fds["pid"], CLONE_NEWPID, "pid")
    alive_r, alive_w = os.pipe2(os.O_CLOEXEC)  # EOF for the child once this shim is gone
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # until the handlers are in place
    child = os.fork()
    if child == 0:
        os.close(alive_w)
        run_child(libc, fds, request, alive_r)
    os.close(alive_r)
    with os.fdopen(pid_fd, "w") as f:  # the caller kills the command itself, not this shim
        f.write(f"{child}\n")
    for sig in FORWARDED:
        signal.signal(sig, lambda signo, _frame: _forward(child, signo))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        signo = os.WTERMSIG(status)
        signal.signal(signo, signal.SIG_DFL)
        os.kill(os.getpid(), signo)
        os._exit(128 + signo)
    os._exit(os.waitstatus_to_exitcode(status))


def _forward(child: int, signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signo)


def run_child(libc: Any, fds: dict[str, int], request: dict[str, Any], alive_r: int) -> NoReturn:
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; commands must not
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for name, nstype in CHILD_NAMESPACES:
        setns(libc, fds[name], nstype, name)
    if request.get("tty"):
        try:
            os.setsid()  # forked from the shim, so never a process-group leader
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        except OSError as exc:
            fail(f"cannot make the terminal the command's own: {exc.strerror}")
    cwd = str(request.get("cwd") or "/")
    try:
        os.chdir(cwd)
    except OSError as exc:
        fail(f"cannot enter {cwd} in the node: {exc.strerror}")
    try:
        os.setgroups([int(g) for g in request["groups"]])
        os.setgid(int(request["gid"]))
        os.setuid(int(request["uid"]))
    except OSError as exc:
        fail(f"cannot switch to uid {request['uid']}: {exc.strerror}")
    if int(request["uid"]) != 0:
        os.chdir(cwd)  # the directory must also be reachable by the user itself
    # The command dies with this shim: an orphan would be adopted by the *host's* init (its
    # parent is outside the node's pid namespace) and hold the node's teardown until reaped.
    # Set after the user switch, which clears it.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if select.select([alive_r], [], [], 0)[0]:
        os._exit(EXIT_CANNOT_ENTER)  # the shim died before the prctl
    argv = [str(a) for a in request["argv"]]
    env = {str(k): str(v) for k, v in request["env"].items()}
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        fail(f"cannot execute {argv[0]}: {exc.strerror}", EXIT_CANNOT_EXEC)


if __name__ == "__main__":
    main()
