"""Linux control groups for tasks: find them, limit a task, count its OOM kills, clean up.

Pure file operations on cgroupfs, no daemon (no systemd, no libcgroup), so the
same code serves the server (inventory, cleanup of lost tasks) and the
supervisor (create, attach, watch).  Both layouts in the wild are handled and
chosen at run time:

- **cgroup v2** (unified; modern distributions): one tree at the cgroup2 mount,
  tasks in ``<mount>/<parent>/<task-key>``.  The controllers are enabled in the
  ``cgroup.subtree_control`` of the mount root and of ``<parent>``, which must
  therefore hold no process itself (the "no internal processes" rule): nothing
  but task cgroups is ever created under it.
- **cgroup v1** (legacy or "hybrid", where the cgroup2 mount has no
  controllers): one tree per controller, tasks in ``<hierarchy>/<parent>/<key>``
  for each of ``memory``, ``cpu`` and ``pids``.

A :class:`CgroupLayout` says where task cgroups live; it is JSON-able and is
written into the task's ``spec.json`` so that a server started later finds the
same directories without detecting anything again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MOUNTINFO = Path("/proc/self/mountinfo")
PROC_CGROUP = Path("/proc/self/cgroup")
CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000
# v1 reports "no limit" as a huge page-aligned number rather than "max".
_V1_UNLIMITED = 2**62


@dataclass(frozen=True, slots=True)
class Limits:
    """What a task may use; 0 means "no limit" for that resource."""

    cpu_milli: int = 0
    memory: int = 0
    pids: int = 0


@dataclass(frozen=True, slots=True)
class Mount:
    """One mounted cgroup hierarchy, as read from ``/proc/self/mountinfo``."""

    path: Path  # where it is mounted
    root: str  # which cgroup of the hierarchy is mounted there ("/" outside containers)
    version: int
    controllers: frozenset[str]


def read_mounts(mountinfo: Path = MOUNTINFO) -> list[Mount]:
    """All cgroup mounts; v2 controllers come from the mount's ``cgroup.controllers``."""
    mounts: list[Mount] = []
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return mounts
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, super_options = tail[0], tail[2]
        path = Path(_unescape(fields[4]))
        root = _unescape(fields[3])
        if fstype == "cgroup2":
            controllers = frozenset(_read(path / "cgroup.controllers").split())
            mounts.append(Mount(path, root, 2, controllers))
        elif fstype == "cgroup":
            names = frozenset(super_options.split(",")) & frozenset(CONTROLLERS)
            mounts.append(Mount(path, root, 1, names))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """Where the cgroups of tasks live (JSON-able; stored in each task's spec)."""

    version: int
    roots: Mapping[str, str]  # v1: controller -> hierarchy mount; v2: {"unified": mount}
    parent: str

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "roots": dict(self.roots), "parent": self.parent}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CgroupLayout:
        return cls(int(data["version"]), dict(data["roots"]), str(data["parent"]))

    @property
    def label(self) -> str:
        """What is recorded as ``limits`` in ``started.json``/``result.json``."""
        return f"cgroup-v{self.version}"

    def prepare(self) -> None:
        """Create the parent cgroup(s) and, for v2, enable the controllers; raises ``OSError``.

        Idempotent.  The driver calls it when it starts, so that a tree it
        cannot use is reported at once rather than task by task.
        """
        if self.version == 2:
            root = Path(self.roots["unified"])
            _enable_controllers(root)
            (root / self.parent).mkdir(exist_ok=True)
            _enable_controllers(root / self.parent)
        else:
            for root_dir in set(self.roots.values()):
                (Path(root_dir) / self.parent).mkdir(exist_ok=True)

    def task(self, key: str) -> TaskCgroup:
        if self.version == 2:
            return TaskCgroupV2(Path(self.roots["unified"]), self.parent, key)
        return TaskCgroupV1({c: Path(r) for c, r in self.roots.items()}, self.parent, key)


def detect_layout(parent: str, mountinfo: Path = MOUNTINFO) -> tuple[CgroupLayout | None, str]:
    """The usable layout, or ``None`` and the reason in plain words.

    v2 wins when its mount has the memory controller; otherwise v1 (hybrid
    systems mount an empty cgroup2 tree beside the v1 hierarchies).
    """
    if not parent or "/" in parent or parent in (".", ".."):
        return None, f"invalid cgroup name {parent!r}"
    mounts = read_mounts(mountinfo)
    unified = [m for m in mounts if m.version == 2 and "memory" in m.controllers]
    if unified:
        mount = unified[0]
        if not _writable(mount.path, parent):
            return None, f"cgroup v2 tree {mount.path} is not writable (not root, or read-only)"
        return CgroupLayout(2, {"unified": str(mount.path)}, parent), ""
    roots: dict[str, str] = {}
    for controller in CONTROLLERS:
        found = [m for m in mounts if m.version == 1 and controller in m.controllers]
        if found:
            roots[controller] = str(found[0].path)
    if "memory" not in roots:
        return None, "no memory cgroup controller is mounted (neither v2 nor v1)"
    for root in roots.values():
        if not _writable(Path(root), parent):
            return None, f"cgroup v1 hierarchy {root} is not writable (not root, or read-only)"
    return CgroupLayout(1, roots, parent), ""


def _writable(root: Path, parent: str) -> bool:
    target = root / parent
    return os.access(target if target.is_dir() else root, os.W_OK)


class TaskCgroup(ABC):
    """The cgroup(s) of one task. Every method is safe to call twice."""

    @abstractmethod
    def dirs(self) -> list[Path]:
        """The task's cgroup directories (one for v2, one per controller for v1)."""

    @abstractmethod
    def create(self, limits: Limits) -> None:
        """Make the directories and write the limits (after ``CgroupLayout.prepare``).

        Raises ``OSError``.
        """

    @abstractmethod
    def oom_kills(self) -> int | None:
        """How many processes the kernel killed for the memory limit; ``None`` if unknown."""

    @abstractmethod
    def memory_peak(self) -> int | None:
        """Highest memory use seen, in bytes, where the kernel reports it."""

    def attach(self, pid: int) -> None:
        """Move ``pid`` (``0``: the caller) into the task's cgroup(s)."""
        for path in self.dirs():
            _write(path / "cgroup.procs", str(pid))

    def exists(self) -> bool:
        return any(path.is_dir() for path in self.dirs())

    def procs(self) -> set[int]:
        pids: set[int] = set()
        for path in self.dirs():
            pids.update(int(p) for p in _read(path / "cgroup.procs").split())
        return pids

    def signal_all(self, sig: int) -> None:
        for pid in self.procs():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill_all(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process in the cgroup until it is empty; ``True`` once it is.

        Repeated because a process may fork between the read and the kill; the
        pids limit bounds how long that can go on.
        """
        deadline = time.monotonic() + timeout
        while True:
            pids = self.procs()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            self.signal_all(signal.SIGKILL)
            time.sleep(0.02)

    def remove(self, timeout: float = 2.0) -> bool:
        """Delete the directories (kills first); ``True`` when none is left.

        The kernel refuses ``rmdir`` (EBUSY) for a moment after the last process
        died, so it is retried briefly.
        """
        self.kill_all(timeout)
        deadline = time.monotonic() + timeout
        left = [p for p in self.dirs() if p.is_dir()]
        while left:
            for path in list(left):
                try:
                    path.rmdir()
                    left.remove(path)
                except FileNotFoundError:
                    left.remove(path)
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.EAGAIN):
                        raise
            if left:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
        return True


class TaskCgroupV1(TaskCgroup):
    """One directory per controller hierarchy (``memory``, ``cpu``, ``pids``)."""

    def __init__(self, roots: Mapping[str, Path], parent: str, key: str) -> None:
        self._paths = {c: root / parent / key for c, root in roots.items()}

    def dirs(self) -> list[Path]:
        # Co-mounted controllers (e.g. "cpu,memory") share one directory.
        return sorted(set(self._paths.values()))

    def create(self, limits: Limits) -> None:
        for path in self.dirs():
            path.mkdir(parents=True, exist_ok=True)
        memory = self._paths.get("memory")
        if memory is not None and limits.memory > 0:
            _write(memory / "memory.limit_in_bytes", str(limits.memory))
            if (memory / "memory.memsw.limit_in_bytes").exists():
                # memory+swap = memory: the task cannot swap its way around the limit.
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory))
            else:
                with contextlib.suppress(OSError):
                    _write(memory / "memory.swappiness", "0")
        cpu = self._paths.get("cpu")
        if cpu is not None and limits.cpu_milli > 0:
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(_quota_us(limits.cpu_milli)))
        pids = self._paths.get("pids")
        if pids is not None and limits.pids > 0:
            _write(pids / "pids.max", str(limits.pids))

    def oom_kills(self) -> int | None:
        memory = self._paths.get("memory")
        return None if memory is None else _field(memory / "memory.oom_control", "oom_kill")

    def memory_peak(self) -> int | None:
        memory = self._paths.get("memory")
        value = None if memory is None else _read(memory / "memory.max_usage_in_bytes")
        return int(value) if value else None


class TaskCgroupV2(TaskCgroup):
    """One directory in the unified tree, with ``cpu``, ``memory`` and ``pids`` enabled."""

    def __init__(self, root: Path, parent: str, key: str) -> None:
        self._path = root / parent / key

    def dirs(self) -> list[Path]:
        return [self._path]

    def create(self, limits: Limits) -> None:
        self._path.mkdir(exist_ok=True)  # the parent: CgroupLayout.prepare()
        path = self._path
        if limits.cpu_milli > 0:
            _write(path / "cpu.max", f"{_quota_us(limits.cpu_milli)} {CPU_PERIOD_US}")
        if limits.memory > 0:
            _write(path / "memory.max", str(limits.memory))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
        if (path / "memory.oom.group").exists():
            # An OOM kill takes the whole task down, not one random process of it.
            _write(path / "memory.oom.group", "1")
        if limits.pids > 0:
            _write(path / "pids.max", str(limits.pids))

    def kill_all(self, timeout: float = 5.0) -> bool:
        kill_file = self._path / "cgroup.kill"  # Linux >= 5.14: atomic, no fork race
        if kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        return super().kill_all(timeout)

    def oom_kills(self) -> int | None:
        return _field(self._path / "memory.events", "oom_kill")

    def memory_peak(self) -> int | None:
        value = _read(self._path / "memory.peak")
        return int(value) if value else None


def _enable_controllers(path: Path) -> None:
    """Enable the task controllers for ``path``'s children where not yet enabled.

    Only missing ones are written: writing an enabled controller again is
    harmless, but writing at all fails (EBUSY) where ``path`` holds processes.
    """
    available = set(_read(path / "cgroup.controllers").split())
    enabled = set(_read(path / "cgroup.subtree_control").split())
    for controller in CONTROLLERS:
        if controller in available and controller not in enabled:
            _write(path / "cgroup.subtree_control", f"+{controller}")
    if "memory" not in available:
        raise OSError(errno.ENOTSUP, f"the memory controller is not available in {path}")


def _quota_us(cpu_milli: int) -> int:
    return max(1000, cpu_milli * CPU_PERIOD_US // 1000)


def _field(path: Path, name: str) -> int | None:
    """A ``name value`` line of a flat-keyed cgroup file."""
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return None


# --- the server's own limits (for the inventory) -------------------------------------------


def own_limits(
    mountinfo: Path = MOUNTINFO, proc_cgroup: Path = PROC_CGROUP
) -> tuple[int | None, int | None]:
    """``(cpu_milli, memory)`` caps from the cgroups this process is in and their ancestors.

    In a container these are the container's limits; ``None`` where there is none.
    """
    cpu: int | None = None
    memory: int | None = None
    mounts = read_mounts(mountinfo)
    for version, controllers, cg_path in _own_cgroups(proc_cgroup):
        for mount in mounts:
            if mount.version != version:
                continue
            if version == 1 and not (mount.controllers & controllers):
                continue
            for directory in _ancestors(mount, cg_path):
                if version == 2:
                    mem = _read(directory / "memory.max")
                    quota, _, period = _read(directory / "cpu.max").partition(" ")
                else:
                    mem = _read(directory / "memory.limit_in_bytes")
                    quota = _read(directory / "cpu.cfs_quota_us")
                    period = _read(directory / "cpu.cfs_period_us")
                if mem.isdigit() and int(mem) < _V1_UNLIMITED:
                    memory = min(memory or int(mem), int(mem))
                if quota.isdigit() and period.isdigit() and int(period) > 0:
                    milli = int(quota) * 1000 // int(period)
                    cpu = min(cpu or milli, milli)
    return cpu, memory


def _own_cgroups(proc_cgroup: Path) -> Iterator[tuple[int, frozenset[str], str]]:
    for line in _read(proc_cgroup).splitlines():
        hierarchy, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if hierarchy == "0" and names == "":
            yield 2, frozenset(), path
        else:
            yield 1, frozenset(names.split(",")), path


def _ancestors(mount: Mount, cg_path: str) -> Iterator[Path]:
    """The directories of ``cg_path`` and its parents that are visible in ``mount``."""
    root = mount.root.rstrip("/")
    if cg_path == root or cg_path.startswith(root + "/"):
        relative = cg_path[len(root) :].strip("/")
    else:  # a cgroup namespace: the path is already relative to the mount
        relative = cg_path.strip("/")
    parts = [p for p in relative.split("/") if p and p != ".."]
    for depth in range(len(parts), -1, -1):
        directory = mount.path.joinpath(*parts[:depth])
        if directory.is_dir():
            yield directory
