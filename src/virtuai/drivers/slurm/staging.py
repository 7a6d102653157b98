"""Copies to a site: ``rsync`` over the site's own SSH (its key, its pinned host key), as
the site's login user, incremental and resumable (``--partial``), with progress.

``Copy`` runs one rsync in a thread and keeps its last progress line
(``--info=progress2``: bytes, percent, rate for the whole transfer), so the
control loop can show it while the copy runs, and a restarted server simply
copies again (rsync sends only what is missing).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtuai.domain.datasets import RsyncProgress, parse_rsync_progress
from virtuai.drivers.slurm.transport import SshTarget

__all__ = ["Copy", "CopyTarget", "inside", "rsync_argv", "write_known_hosts"]

MAX_ERROR = 2000


@dataclass(frozen=True, slots=True)
class CopyTarget:
    """Where a copy goes: a site's login node (``login``) or this machine (None)."""

    login: str | None
    identity_path: str | None
    known_hosts_path: str | None
    dest: str  # an absolute path there


def rsync_argv(source: str, target: CopyTarget) -> list[str]:
    """A directory's contents go into ``dest``; a file goes into it as ``dest/<name>``."""
    src = source.rstrip("/") + "/" if os.path.isdir(source) else source
    argv = ["rsync", "-a", "--partial", "--mkpath", "--info=progress2", "--no-inc-recursive"]
    if target.login is None:
        return [*argv, src, target.dest.rstrip("/") + "/"]
    assert target.identity_path is not None and target.known_hosts_path is not None
    ssh = SshTarget.parse(target.login, target.identity_path, "")
    shell = [
        "ssh",
        "-i",
        target.identity_path,
        "-p",
        str(ssh.port),
        "-o",
        f"UserKnownHostsFile={target.known_hosts_path}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=15",
    ]
    dest = f"{ssh.user}@{ssh.host}:{target.dest.rstrip('/')}/"
    return [*argv, "-e", shlex.join(shell), src, dest]


def inside(path: str, root: Path) -> bool:
    """``path``, its symbolic links resolved, lies in ``root`` (itself resolved)."""
    return Path(os.path.realpath(path)).is_relative_to(root.resolve())


def write_known_hosts(identity_path: str, known_hosts: str) -> str:
    """The site's pinned host keys in a file beside its key (0600), for OpenSSH's ``ssh``."""
    path = Path(identity_path).with_suffix(".known_hosts")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(known_hosts)
    return str(path)


class Copy:
    """One rsync, run in a thread; ``done``, ``status``, ``error`` and ``progress`` tell."""

    def __init__(self, argv: list[str], on_done: Callable[[], None] | None = None) -> None:
        self.argv = argv
        self._on_done = on_done
        self.progress: RsyncProgress | None = None
        self.status: int | None = None
        self.error = ""
        self._thread = threading.Thread(target=self._run, name="rsync", daemon=True)

    def start(self) -> Copy:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self.status is not None

    def _run(self) -> None:
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, "LC_ALL": "C"},
            )
        except OSError as error:
            self.error, self.status = f"cannot run rsync: {error}", 127
            if self._on_done is not None:
                self._on_done()
            return
        assert proc.stdout is not None and proc.stderr is not None
        err = proc.stderr
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(err.read()), daemon=True)
        reader.start()
        pending = b""
        while chunk := os.read(proc.stdout.fileno(), 65536):
            pending += chunk
            *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                seen = parse_rsync_progress(line.decode(errors="replace"))
                if seen is not None:
                    self.progress = seen
        status = proc.wait()
        reader.join()
        self.error = b"".join(errors).decode(errors="replace").strip()[-MAX_ERROR:]
        self.status = status
        if self._on_done is not None:
            self._on_done()
