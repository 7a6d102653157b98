"""Run one command over an image's root, as an unprivileged user: bubblewrap, read-only binds.

Used to build a tenant's Python environment *for an image* (``env create --image``):
the build must run the image's Python, so that the environment works inside the
job sandboxes over that image, and it must write into the tenant's workspace on
the host, at the path jobs will see it at.

The image's root cannot simply be bound at ``/`` (read-only), because a bind at
``/var/lib/...`` below it needs its mount point made, and the bubblewrap packaged
in Debian 12 has no overlay option.  So the new root stays bubblewrap's own
tmpfs, and every top-level entry of the image is bound there read-only, except
along the paths to be bound writable: there the directories are made on the
tmpfs and their siblings in the image bound one by one ("punching through").
The result is the image's tree, read-only, with the writable paths in it.

The command runs as the tenant's user, bubblewrap in an unprivileged user
namespace, with the host's network (a build may download packages).  The image
store lies in root's state directory, which tenants cannot traverse; so, when
the server is root, the command starts in a private mount namespace of its own
(``unshare``) where the image's root is bound on an empty directory anyone may
traverse, and drops to the tenant's user (``setpriv``) only then: the tenant's
user reads what the image holds and nothing else of the server's state.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host files a build needs for the host's network, bound read-only if the image has them.
HOST_FILES = ("/etc/resolv.conf", "/etc/hosts")
# $1 mount, $2 setpriv, $3 the image's root, $4 where to bind it, $5 uid, $6 gid; then the
# command.
_AS_USER = """
set -eu
"$1" --bind -- "$3" "$4"
setpriv=$2 uid=$5 gid=$6
shift 6
exec "$setpriv" --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
"""


class OverImageError(Exception):
    """The command cannot be made; the message says why."""


@contextmanager
def over_image(
    root: Path, writable: Sequence[Path], user: tuple[int, int] | None
) -> Iterator[list[str]]:
    """The argv prefix (up to ``--``) that runs a command over ``root`` with ``writable``
    (absolute host paths) bound read-write at the same place; as ``user`` (uid, gid) when
    the caller is root.  Run it as the caller, then leave the context."""
    bwrap = _program("bwrap", "bubblewrap")
    if user is None:
        yield _bwrap_argv(bwrap, root, root, writable)
        return
    unshare, setpriv = _program("unshare", "util-linux"), _program("setpriv", "util-linux")
    mount = _program("mount", "mount")
    place = Path(tempfile.mkdtemp(prefix="virtuai-image-"))
    try:
        os.chmod(place, 0o755)  # the tenant's user reaches the image through it
        uid, gid = user
        yield [
            unshare, "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", _AS_USER, "as-user",
            mount, setpriv, str(root), str(place), str(uid), str(gid),
            *_bwrap_argv(bwrap, root, place, writable),
        ]  # fmt: skip
    finally:
        os.rmdir(place)  # empty: the bind existed only in the command's mount namespace


def _bwrap_argv(bwrap: str, root: Path, source: Path, writable: Sequence[Path]) -> list[str]:
    """``root`` is read here (as the caller); ``source`` is where the command sees it."""
    argv = [
        bwrap,
        "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent",
        "--new-session",
    ]  # fmt: skip
    argv += _binds(root, source, Path("/"), [_parts(p) for p in writable])
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    for path in HOST_FILES:
        if os.path.exists(path) and os.path.lexists(root / path.lstrip("/")):
            argv += ["--ro-bind", path, path]
    for place in writable:
        argv += ["--bind", str(place), str(place)]
    return [*argv, "--chdir", "/", "--"]


def _parts(path: Path) -> tuple[str, ...]:
    if not path.is_absolute():
        raise OverImageError(f"{path} is not an absolute path")
    return path.parts[1:]


def _binds(root: Path, source: Path, at: Path, through: list[tuple[str, ...]]) -> list[str]:
    """Bind the entries of ``root`` (seen by the command at ``source``) at ``at``, descending
    into the first components of ``through`` (made as directories) instead of binding them."""
    descend: dict[str, list[tuple[str, ...]]] = {}
    for parts in through:
        if parts:
            descend.setdefault(parts[0], []).append(parts[1:])
    argv: list[str] = []
    try:
        entries = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        entries = []
    for name in entries:
        if name in ("proc", "dev", "tmp") or name in descend:
            continue  # bubblewrap's own (below), or punched through
        if (root / name).is_symlink():
            argv += ["--symlink", os.readlink(root / name), str(at / name)]
        else:
            argv += ["--ro-bind", str(source / name), str(at / name)]
    for name, rest in sorted(descend.items()):
        if (root / name).is_symlink():
            # A writable path through a symlink of the image (say /var -> /srv/var) would
            # land elsewhere than on the host: refused rather than silently misplaced.
            raise OverImageError(f"{at / name} is a symbolic link in the image")
        argv += ["--perms", "0755", "--dir", str(at / name)]
        if all(rest):  # not the writable path itself: its siblings come from the image
            argv += _binds(root / name, source / name, at / name, rest)
    return argv


def _program(name: str, package: str) -> str:
    path = shutil.which(name, path=BASE_PATH)
    if path is None:
        raise OverImageError(f"{name} is not installed on this machine (Debian: {package})")
    return path
