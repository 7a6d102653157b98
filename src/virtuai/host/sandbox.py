"""What a sandboxed task runs over: a typed record shared by the local driver (which enters
it) and the virtual-cluster runtime (which resolves images on this machine)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobImage:
    """The image a task runs over (``submit --image``), resolved on the machine running it."""

    name: str
    root: str  # its read-only root file system here: the lower layer of the task's overlay
    keepalive: str  # a sleep program inside it (absolute path): the sandbox's idle init
