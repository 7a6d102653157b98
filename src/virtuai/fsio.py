"""Crash-safe file writes, shared by every layer that keeps records on disk.

A reader sees the old content or the new, never a part, and once the call
returns the new content survives a power cut (file and directory fsynced).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Replace ``path`` by ``data``; the file has ``mode`` from its first byte on.

    ``durable=False`` skips the two ``fsync``s (a few milliseconds each on a busy disk):
    for records that only matter while this machine stays up (a process's pid, which a
    power cut makes meaningless anyway).  The write is atomic either way, and survives
    the death of any process, the writer's included (the page cache is the kernel's).
    """
    tmp = temporary_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exact, whatever the umask
            os.write(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def temporary_sibling(path: Path) -> Path:
    """A sibling name unique to this write (threads share a pid, so the pid is not enough)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def fsync_dir(path: Path) -> None:
    """Make a rename or link in ``path`` durable; best effort on file systems that refuse."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
