"""Images: read-only root file systems that nodes' overlays stack on.

Layout: ``<state>/images/<name>/rootfs`` plus ``image.json`` (size, origin).
An imported rootfs is never written again: it is made a read-only bind mount
of itself (``ImageStore.protect`` re-establishes it after a reboot), which
keeps the files' own modes intact -- ``chmod -R a-w`` would change what the
nodes see (``/tmp`` would lose its sticky ``1777``).

The built-in ``host`` image is the host's root file system itself, used as
the overlay's lower layer directly (``lowerdir=/``): no copy, no bind,
constant time.  Overlayfs accepts it although every node's upper layer lives
below ``/`` (the kernel puts a "trap" on the upper and work directories:
looking them up through the overlay fails with ``ELOOP`` instead of looping).
Only the root file system is seen -- overlayfs does not cross mounts -- so
``/proc``, ``/sys``, ``/run`` and separately mounted ``/home`` are not part of
it; the runtime checks that ``/usr`` and ``/etc`` are on the root file
system.  Host directories tenants should not browse (``/tmp``, ``/var/tmp``,
``/root``, ``/home``, the runtime's state) are hidden in every node by
opaque directories in the node's upper layer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtuai.domain.tenancy import validate_name
from virtuai.errors import Conflict, DriverError, InvalidRequest, NotFound
from virtuai.vcruntime import system

HOST = "host"
IMAGE_JSON = "image.json"
ROOTFS = "rootfs"
HOST_HIDDEN = ("/tmp", "/var/tmp", "/root", "/home")
KEEPALIVE_CANDIDATES = ("usr/bin/sleep", "bin/sleep")  # the node's pid 2 (see nodes.py)


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    lower: Path  # the overlay's lowerdir
    builtin: bool
    size_bytes: int  # what the image stores on disk (0 for ``host``: nothing is stored)
    created_at: float | None
    source: str
    hidden: tuple[str, ...] = ()  # absolute paths hidden in nodes (opaque upper dirs)


class ImageStore:
    """Images under ``<state>/images``.  Import and delete need root."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "images"

    # -- reading -------------------------------------------------------------------------

    def host(self) -> Image:
        hidden = (*HOST_HIDDEN, str(self.state_dir))
        return Image(HOST, Path("/"), True, 0, None, "the host's root file system", hidden)

    def get(self, name: str) -> Image:
        if name == HOST:
            return self.host()
        validate_name(name, field="image")
        meta = self._meta(name)
        if meta is None or not (self.root / name / ROOTFS).is_dir():
            raise NotFound(f"image {name} does not exist", field="image")
        return Image(
            name,
            self.root / name / ROOTFS,
            False,
            int(meta.get("size_bytes", 0)),
            float(meta.get("created_at", 0)) or None,
            str(meta.get("source", "")),
        )

    def list(self) -> list[Image]:
        images = [self.host()]
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                if entry.name.startswith(".") or not (entry / IMAGE_JSON).is_file():
                    continue
                with contextlib.suppress(NotFound, InvalidRequest):
                    images.append(self.get(entry.name))
        return images

    def _meta(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / name / IMAGE_JSON).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- importing -----------------------------------------------------------------------

    def import_tar(self, name: str, file: Path) -> Image:
        """Unpack a root file system tarball (any compression GNU tar detects)."""
        file = Path(file)
        if not file.is_file():
            raise NotFound(f"no tarball at {file}", field="file")

        def fill(rootfs: Path) -> None:
            system.run(
                [
                    "tar", "--extract", "--file", str(file), "--directory", str(rootfs),
                    "--numeric-owner", "--preserve-permissions", "--same-owner",
                    "--xattrs", "--xattrs-include=*", "--no-overwrite-dir",
                ],
                timeout=3600,
                what=f"unpacking {file}",
            )  # fmt: skip

        return self._import(name, f"tar:{file}", fill)

    def import_dir(self, name: str, source: Path, *, move: bool = False) -> Image:
        """Copy a directory tree (``cp -a``: owners, modes, links, xattrs); ``move``
        renames it into place instead (same file system; the source is consumed)."""
        source = Path(source)
        if not source.is_dir():
            raise NotFound(f"no directory at {source}", field="dir")

        def fill(rootfs: Path) -> None:
            if move:
                rootfs.rmdir()
                try:
                    source.rename(rootfs)
                except OSError as exc:
                    rootfs.mkdir()
                    raise DriverError(f"cannot move {source} into the image store: {exc}") from exc
            else:
                system.run(
                    ["cp", "-a", "--reflink=auto", "--", f"{source}/.", str(rootfs)],
                    timeout=3600,
                    what=f"copying {source}",
                )

        return self._import(name, f"dir:{source}", fill)

    def _import(self, name: str, source: str, fill: Callable[[Path], None]) -> Image:
        validate_name(name, field="image")
        if name == HOST:
            raise Conflict("image host is built in", field="image")
        if (self.root / name).exists():
            raise Conflict(f"image {name} already exists", field="image")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        staging = self.root / f".import-{uuid.uuid4().hex[:12]}"
        rootfs = staging / ROOTFS
        try:
            rootfs.mkdir(parents=True, mode=0o755)
            fill(rootfs)
            keepalive = find_keepalive(rootfs)
            if keepalive is None:
                raise InvalidRequest(
                    f"image {name} has no sleep program ({' or '.join(KEEPALIVE_CANDIDATES)}): "
                    "a node's init needs one",
                    field="image",
                )
            size = system.disk_usage(rootfs)
            meta = {"name": name, "size_bytes": size, "created_at": time.time(), "source": source}
            system.write_file(staging / IMAGE_JSON, json.dumps(meta, sort_keys=True), 0o600)
            try:
                staging.rename(self.root / name)
            except OSError as exc:
                raise Conflict(f"image {name} already exists", field="image") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.protect(name)
        return self.get(name)

    def protect(self, name: str) -> None:
        """Make ``rootfs`` a read-only bind mount of itself (idempotent)."""
        if name == HOST:
            return
        rootfs = self.root / name / ROOTFS
        if system.is_mountpoint(rootfs):
            return
        try:
            system.mount(str(rootfs), rootfs, None, system.MS_BIND)
            system.mount(
                "",
                rootfs,
                None,
                system.MS_BIND
                | system.MS_REMOUNT
                | system.MS_RDONLY
                | system.MS_NOSUID
                | system.MS_NODEV,
            )
        except OSError as exc:
            with contextlib.suppress(OSError):
                system.umount(rootfs)
            raise DriverError(f"cannot make image {name} read-only: {exc}") from exc

    def delete(self, name: str) -> None:
        """Remove an image; the caller makes sure no cluster uses it."""
        if name == HOST:
            raise Conflict("image host is built in", field="image")
        validate_name(name, field="image")
        target = self.root / name
        if not target.exists():
            return
        for mountpoint, _ in system.mounts_under(target):
            try:
                system.umount(mountpoint)
            except OSError as exc:
                raise Conflict(f"image {name} is in use: {exc}", field="image") from exc
        shutil.rmtree(target)


def find_keepalive(rootfs: Path) -> str | None:
    """The path (inside the image) of the program that keeps a node alive, if any."""
    for candidate in KEEPALIVE_CANDIDATES:
        if _resolves_in(rootfs, candidate):
            return "/" + candidate
    return None


def _resolves_in(rootfs: Path, relative: str, depth: int = 0) -> bool:
    """Whether ``relative`` names a regular file inside ``rootfs``, following symlinks
    as they would resolve inside it (absolute targets are relative to ``rootfs``)."""
    if depth > 8:
        return False
    current = rootfs
    parts = [p for p in relative.split("/") if p]
    for i, part in enumerate(parts):
        candidate = current / part
        if candidate.is_symlink():
            target = os.readlink(candidate)
            base = "" if target.startswith("/") else str(current.relative_to(rootfs))
            rest = "/".join(parts[i + 1 :])
            joined = "/".join(p for p in (base, target.lstrip("/"), rest) if p)
            inside = [p for p in os.path.normpath(joined).split("/") if p not in ("", "..", ".")]
            return _resolves_in(rootfs, "/".join(inside), depth + 1)
        current = candidate
    return current.is_file()


def host_root_problem() -> str | None:
    """Why the host's root file system cannot serve as the ``host`` image, if it cannot."""
    try:
        root_dev = os.stat("/").st_dev
        for path in ("/usr", "/etc"):
            if os.stat(path).st_dev != root_dev:
                return (
                    f"{path} is not on the root file system, so the host image would lack it "
                    "(import an image instead)"
                )
    except OSError as exc:
        return f"cannot inspect the root file system: {exc}"
    return None
