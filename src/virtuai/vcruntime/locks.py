"""One lock per virtual cluster, across threads and processes (``flock`` on a file).

Operations on one cluster (create, suspend, resume, delete, reconcile) are
serialised; different clusters proceed in parallel.  The lock file is
removed by ``delete``: a waiter that then gets the lock on the removed file
notices (the path no longer names the file it locked) and takes the lock again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def vc_lock(locks_dir: Path, vc_id: str) -> Iterator[Path]:
    locks_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = locks_dir / f"{vc_id}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                continue  # removed (or replaced) while we waited: lock the current file
            try:
                yield path
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            return
        finally:
            os.close(fd)


def remove_lock(locks_dir: Path, vc_id: str) -> None:
    """Called with the lock held, when the cluster is gone."""
    with contextlib.suppress(FileNotFoundError):
        (locks_dir / f"{vc_id}.lock").unlink()
