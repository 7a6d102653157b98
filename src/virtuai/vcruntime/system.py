"""Thin, audited wrappers over what the runtime asks of the kernel and of system tools.

- ``run``: a system command (``ip``, ``nft``) with a clean environment; a
  failure becomes a ``DriverError`` that quotes the command's own words.
- ``mount``/``umount``: the system calls through ctypes (no ``mount``
  process per node: 50 mounts take a few milliseconds).
- ``mounts_under``: mount points below a directory, from ``/proc/self/mountinfo``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from virtuai.errors import DriverError

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MOUNTINFO = Path("/proc/self/mountinfo")

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 60.0,
    check: bool = True,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a system command; ``DriverError`` on failure (when ``check``)."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={"PATH": BASE_PATH, "LANG": "C"},
        )
    except FileNotFoundError:
        raise DriverError(f"{what or argv[0]}: command {argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise DriverError(f"{what or argv[0]}: no answer in {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().replace("\n", "; ")[:2000]
        raise DriverError(f"{what or ' '.join(argv[:3])} failed (exit {proc.returncode}): {detail}")
    return proc


def which(name: str) -> str | None:
    return shutil.which(name, path=BASE_PATH)


def mount(source: str, target: Path, fstype: str | None, flags: int, data: str = "") -> None:
    """mount(2); raises ``OSError`` with the kernel's errno."""
    res = _libc.mount(
        source.encode(),
        str(target).encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} on {target}: {os.strerror(err)}")


def umount(target: Path, *, lazy: bool = False) -> bool:
    """umount2(2); ``False`` when nothing was mounted there.  Raises ``OSError`` (EBUSY...)."""
    res = _libc.umount2(str(target).encode(), MNT_DETACH if lazy else 0)
    if res != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return False
        raise OSError(err, f"umount {target}: {os.strerror(err)}")
    return True


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def mount_table(mountinfo: Path = MOUNTINFO) -> list[tuple[Path, str]]:
    """``(mount point, fs type)`` of every mount of this mount namespace, in mount order."""
    table: list[tuple[Path, str]] = []
    with contextlib.suppress(OSError):
        for line in mountinfo.read_text().splitlines():
            left, sep, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if sep and len(fields) >= 5 and tail:
                table.append((Path(_unescape(fields[4])), tail[0]))
    return table


def mounts_under(root: Path, mountinfo: Path = MOUNTINFO) -> list[tuple[Path, str]]:
    """Mounts at or below ``root``, deepest first (the order to unmount them in)."""
    prefix = str(root).rstrip("/") + "/"
    found = [
        (p, t)
        for p, t in mount_table(mountinfo)
        if str(p) == str(root) or str(p).startswith(prefix)
    ]
    return sorted(found, key=lambda m: len(m[0].parts), reverse=True)


def is_mountpoint(path: Path, fstype: str | None = None) -> bool:
    return any(p == path and (fstype is None or t == fstype) for p, t in mount_table())


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` atomically (small generated files: hosts, env)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def disk_usage(path: Path) -> int:
    """Bytes allocated below ``path`` (each inode counted once), not crossing mounts."""
    total = 0
    seen: set[tuple[int, int]] = set()
    try:
        root_dev = path.lstat().st_dev
    except OSError:
        return 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            st = current.lstat()
        except OSError:
            continue
        if st.st_dev != root_dev or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_blocks * 512
        if current.is_dir() and not current.is_symlink():
            with contextlib.suppress(OSError):
                stack.extend(current.iterdir())
    return total
