"""What a sandboxed task runs over or inside: typed records shared by the local driver (which
enters them) and the virtual-cluster runtime (which resolves images and runs virtual nodes
on this machine).  The driver does not import the runtime: these records are the contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JobImage:
    """The image a task runs over (``submit --image``), resolved on the machine running it."""

    name: str
    root: str  # its read-only root file system here: the lower layer of the task's overlay
    keepalive: str  # a sleep program inside it (absolute path): the sandbox's idle init
    # Host directories bound read-only at the same place (the job's environment, built
    # for this image: ``env create --image``).
    binds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualNode:
    """The virtual node a task runs inside (``TaskSpec.vnode``).

    The supervisor creates the task's cgroup inside the node's (``cgroup``), checks that
    ``init_pid`` is still the process born at ``init_create_time``, enters the node's pid
    namespace before forking the task, and the task enters the node's net, uts, ipc and
    mount namespaces and its working directory before dropping to the tenant's user.
    """

    vc: str
    index: int
    hostname: str
    init_pid: int
    init_create_time: float
    cgroup: Mapping[str, Any]  # CgroupLayout JSON whose tasks are children of the node's cgroup

    def to_json(self) -> dict[str, Any]:
        return {
            "vc": self.vc,
            "index": self.index,
            "hostname": self.hostname,
            "init_pid": self.init_pid,
            "init_create_time": self.init_create_time,
            "cgroup": dict(self.cgroup),
        }
