"""On-disk state of virtual clusters: directories, overlay roots, the shared volume.

::

    <state>/                           0700 root: nothing below is reachable by tenants
      images/<name>/rootfs             read-only (see images.py)
      vcs/<vc id>/                     0700
        vc.json                        the spec and the desired state (running | suspended)
        shared/                        2770 tenant: the VC-wide volume, /shared in every node
        etc/hosts, etc/hostfile        generated; bound read-only into every node
        nodes/<i>/
          upper/ work/                 the node's private writable layer (kept over suspend)
          merged/                      the overlay mount point: the node's root
          hostname, node.env           generated; bound read-only into the node
          init.json, init.log          the running init (pid + start time) and its stderr

A fresh node costs a handful of directories and inodes (tens of KiB), whatever
the size of the image: the overlay copies a file up only when it is written.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from virtuai.errors import DriverError
from virtuai.vcruntime import system
from virtuai.vcruntime.images import Image

log = logging.getLogger(__name__)

OPAQUE_XATTR = "trusted.overlay.opaque"
OVERLAY_FLAGS = system.MS_NOSUID | system.MS_NODEV  # no setuid root, no device files from images
_UNSAFE_IN_OPTIONS = frozenset(",:\\ \t\n=")


@dataclass(frozen=True, slots=True)
class NodePaths:
    dir: Path

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def merged(self) -> Path:
        return self.dir / "merged"

    @property
    def hostname(self) -> Path:
        return self.dir / "hostname"

    @property
    def env(self) -> Path:
        return self.dir / "node.env"

    @property
    def init_record(self) -> Path:
        return self.dir / "init.json"

    @property
    def init_log(self) -> Path:
        return self.dir / "init.log"


@dataclass(frozen=True, slots=True)
class VcPaths:
    dir: Path

    @property
    def record(self) -> Path:
        return self.dir / "vc.json"

    @property
    def shared(self) -> Path:
        return self.dir / "shared"

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def hosts(self) -> Path:
        return self.etc / "hosts"

    @property
    def hostfile(self) -> Path:
        return self.etc / "hostfile"

    def node(self, index: int) -> NodePaths:
        return NodePaths(self.dir / "nodes" / str(index))


def vcs_root(state_dir: Path) -> Path:
    return state_dir / "vcs"


def vc_paths(state_dir: Path, vc_id: str) -> VcPaths:
    return VcPaths(vcs_root(state_dir) / vc_id)


def check_state_dir(state_dir: Path) -> str | None:
    """Why ``state_dir`` cannot hold overlay layers, if it cannot (overlay options
    are comma- and colon-separated, so such characters cannot be in the paths)."""
    if not state_dir.is_absolute():
        return f"the state directory {state_dir} must be an absolute path"
    if _UNSAFE_IN_OPTIONS & set(str(state_dir)):
        return f"the state directory {state_dir} contains a character overlayfs options cannot hold"
    return None


def prepare_vc_dirs(paths: VcPaths, uid: int, gid: int) -> None:
    """The cluster's directories (idempotent); ``shared`` belongs to the tenant's user."""
    paths.dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.dir.mkdir(mode=0o700, exist_ok=True)
    paths.etc.mkdir(mode=0o755, exist_ok=True)
    (paths.dir / "nodes").mkdir(mode=0o700, exist_ok=True)
    paths.shared.mkdir(mode=0o2770, exist_ok=True)
    st = paths.shared.stat()
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(paths.shared, uid, gid)
    os.chmod(paths.shared, 0o2770)


def prepare_node_dirs(node: NodePaths, image: Image) -> None:
    """upper/work/merged of a node (idempotent); a fresh upper gets the image's hides."""
    node.dir.mkdir(mode=0o700, exist_ok=True)
    fresh = not node.upper.exists()
    node.work.mkdir(mode=0o700, exist_ok=True)
    node.merged.mkdir(mode=0o755, exist_ok=True)
    if fresh:
        staging = node.dir / "upper.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        _copy_attrs(image.lower, staging)  # the merged root takes the upper root's mode/owner
        for hidden in _outermost(image.hidden):
            _hide(image.lower, staging, hidden)
        _make_mount_dir(image.lower, staging, "etc/virtuai")
        staging.rename(node.upper)


def _outermost(paths: tuple[str, ...]) -> list[str]:
    """Paths not below another of the list (hiding ``/tmp`` hides ``/tmp/x`` already)."""
    norm = sorted({os.path.normpath(p) for p in paths})
    kept: list[str] = []
    for p in norm:
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return kept


def _hide(lower: Path, upper: Path, absolute: str) -> None:
    """Make ``absolute`` an empty opaque directory in the merged view (if the image has it)."""
    relative = absolute.strip("/")
    source = lower / relative
    if not relative or not source.is_dir() or source.is_symlink():
        return
    current_lower, current_upper = lower, upper
    for part in Path(relative).parts:
        current_lower, current_upper = current_lower / part, current_upper / part
        if not current_upper.exists():
            current_upper.mkdir()
            _copy_attrs(current_lower, current_upper)
    os.setxattr(current_upper, OPAQUE_XATTR, b"y")


def _make_mount_dir(lower: Path, upper: Path, relative: str) -> None:
    """A 0755 directory for files bound into the node (bubblewrap would make it 0700)."""
    current_lower, current_upper = lower, upper
    for part in Path(relative).parts:
        current_lower, current_upper = current_lower / part, current_upper / part
        if not current_upper.exists():
            current_upper.mkdir(mode=0o755)
            if current_lower.is_dir():
                _copy_attrs(current_lower, current_upper)


def _copy_attrs(source: Path, target: Path) -> None:
    st = source.stat()
    os.chown(target, st.st_uid, st.st_gid)
    os.chmod(target, st.st_mode & 0o7777)


def write_vc_files(paths: VcPaths, hosts: str, hostfile: str) -> None:
    system.write_file(paths.hosts, hosts)
    system.write_file(paths.hostfile, hostfile)


def write_node_files(node: NodePaths, hostname: str, env: str) -> None:
    system.write_file(node.hostname, hostname + "\n")
    system.write_file(node.env, env)


def mount_overlay(lower: Path, node: NodePaths, mounted: set[Path] | None = None) -> bool:
    """Mount the node's root (idempotent); ``True`` when this call mounted it.

    ``mounted``: the overlay mount points that exist, read once by the caller
    (reading the mount table per node would make a cluster's mounts quadratic).
    """
    if mounted is None:
        mounted = {p for p, t in system.mount_table() if t == "overlay"}
    if node.merged in mounted:
        return False
    options = f"lowerdir={lower},upperdir={node.upper},workdir={node.work}"
    try:
        system.mount("overlay", node.merged, "overlay", OVERLAY_FLAGS, options)
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EBUSY:
            hint = " (its upper layer is still in use by an earlier mount of this node)"
        raise DriverError(f"cannot mount the root of node {node.dir.name}: {exc}{hint}") from exc
    return True


def unmount_overlay(node: NodePaths) -> None:
    """Unmount the node's root if mounted; lazily when something on the host still holds it."""
    for _ in range(3):
        try:
            if not system.umount(node.merged):
                return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise DriverError(f"cannot unmount {node.merged}: {exc}") from exc
            log.warning("%s is busy; detaching it lazily", node.merged)
            with contextlib.suppress(OSError):
                system.umount(node.merged, lazy=True)


def remove_tree(path: Path, workers: int = 8) -> None:
    """``rm -rf`` that refuses to descend into anything still mounted below ``path``.

    The nodes' directories go in parallel: removing a directory entry waits on
    the file system's journal, and the directories of different nodes do not
    share a parent lock.
    """
    mounted = system.mounts_under(path)
    if mounted:
        raise DriverError(
            f"refusing to remove {path}: still mounted below it: "
            + ", ".join(str(m) for m, _ in mounted)
        )
    try:
        subtrees = [p for p in (path / "nodes").iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        subtrees = []
    try:
        if len(subtrees) > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for done in pool.map(_rmtree, subtrees):
                    if done is not None:
                        raise done
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DriverError(f"cannot remove {path}: {exc}") from exc


def _rmtree(path: Path) -> OSError | None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc
    return None
