"""The contract between driver and supervisor: the task directory and its records.

The task directory is the only channel between the server and a supervisor
(which outlives the server), so every record is written atomically: a reader
in another process sees either the whole previous state or the whole new one,
never half a file, even across a power cut (write a temporary file, fsync,
rename, fsync the directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from virtuai.fsio import fsync_dir, temporary_sibling, write_atomic

SPEC = "spec.json"  # written by the driver before the supervisor starts
SUPERVISOR_PID = "supervisor.pid"  # claimed by exactly one supervisor (launch idempotency)
SUPERVISOR_LOG = "supervisor.log"  # the supervisor's own diagnostics
STARTED = "started.json"  # written once the task's command runs
STOP = "stop.json"  # a durable stop request (the signal only wakes the supervisor)
RESULT = "result.json"  # how the task ended; written once, last
STDOUT = "stdout.log"
STDERR = "stderr.log"

SUPERVISOR_MODULE = "virtuai.drivers.local.supervisor"
# Exit codes of the supervisor's first process, which the driver waits for.
EXIT_STARTED = 0  # the supervisor has claimed the task and runs it
EXIT_ERROR = 1  # see supervisor.log
EXIT_ALREADY = 3  # another supervisor owns this task dir, or the task has ended
READY_TIMEOUT_S = 15.0  # how long the first process waits for the supervisor's claim


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created ``0600`` if missing): one holder at a
    time among threads and processes alike (each open is its own lock)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


DIR_LOCK = ".virtuai-mkdir.lock"


def create_owned_dir(path: Path, uid: int | None, gid: int | None, mode: int = 0o700) -> bool:
    """Make ``path`` (``mode``, given to ``uid``/``gid`` when set) unless it exists; True if
    made.  Making it and giving it away are one step under a lock in the parent, shared
    by every server (and thread) making directories there: another one finding the
    directory waits until its maker has given it away, so it never sees it root's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent / DIR_LOCK):
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            return False
        if uid is not None and gid is not None:
            os.chown(path, uid, gid)
        path.chmod(mode)  # mkdir's mode went through the umask
        return True


def write_json_atomic(
    path: Path, data: dict[str, Any], mode: int = 0o600, *, durable: bool = True
) -> None:
    """Replace ``path`` by ``data`` so that readers never see a partial file
    (``durable``: see ``fsio.write_atomic``)."""
    write_atomic(path, json.dumps(data, sort_keys=True).encode(), mode, durable=durable)


def link_json_exclusive(
    path: Path, data: dict[str, Any], mode: int = 0o600, *, durable: bool = True
) -> bool:
    """Create ``path`` with ``data`` unless it exists; ``False`` when another writer won.

    Writing a temporary file and hard-linking it into place is both atomic
    (no reader sees it empty) and exclusive (``link`` fails on an existing
    name), which ``O_CREAT | O_EXCL`` alone is not.  ``durable``: see ``fsio.write_atomic``.
    """
    tmp = temporary_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, json.dumps(data, sort_keys=True).encode())
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)
    return True


def read_json(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or ``None`` when it does not exist (yet) or is unreadable."""
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def log_tail(path: Path, limit: int = 600) -> str:
    """The end of a log on one line, for an error message ("no log" if it cannot be read)."""
    try:
        text = path.read_bytes()[-limit:].decode(errors="replace").strip()
    except OSError:
        return "no log"
    return text.replace("\n", "; ") or "no output"
