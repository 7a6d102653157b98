"""The contract every driver (local machine, Slurm, ...) fulfils.

A driver runs *tasks*: one process of a job on one node.  Its semantics are
exact, as in JupyterHub's spawner:

- ``launch(spec)`` starts the task and returns a JSON-able ``handle`` that the
  control plane stores in the database.  Launching the same task twice (same
  ``spec.key``) must not start it twice: the second call returns the first
  handle.  This is what makes a crash between "launch" and "record" safe.
- ``observe(handle)`` returns ``None`` while the task runs, else how it ended.
  It must work in a new process of the server, from the handle alone.
- ``stop(handle, reason)`` asks the task to stop: SIGTERM, then SIGKILL after
  ``spec.kill_grace_s``.  Idempotent; the outcome is seen through ``observe``.
- ``read_log(handle, stream, offset, limit)`` returns bytes of stdout/stderr.
- ``release(handle)`` frees what is left (cgroups) once the outcome is recorded.
- ``inventory()`` lists the nodes this driver offers; ``node_names()`` the
  names of the nodes it currently offers, without probing anything.
- ``rendezvous(node)`` returns an address and a free port on ``node`` for a
  gang's task 0 (``MASTER_ADDR``/``MASTER_PORT``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from virtuai.domain.resources import Node, Resources
from virtuai.domain.workload import TaskOutcome
from virtuai.errors import DriverError
from virtuai.host.sandbox import JobImage, VirtualNode

Handle = dict[str, Any]


class TemporaryDriverError(DriverError):
    """The driver cannot act now (a remote site is unreachable) and started nothing:
    the caller retries later instead of failing the task."""


class LogStream(enum.StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


class StopReason(enum.StrEnum):
    CANCEL = "cancel"
    PREEMPT = "preempt"
    # Killed at once, no grace: the task's attempt was moved elsewhere (its node was lost)
    # or this node lost the database and must not run work the leader may hand out again.
    FENCE = "fence"


class DriverBusy(DriverError):
    """The driver could not do it *now* (a timeout on a busy machine): the control plane
    retries with backoff, where another ``DriverError`` is a refusal that ends the task."""


# The message of a task killed with ``StopReason.FENCE``: the control plane requeues its job.
FENCE_MESSAGE = "killed at once: its node lost the database, or its attempt moved elsewhere"


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Everything a driver needs to start one task; built by the control plane."""

    job_id: str
    attempt: int
    index: int
    tenant: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str | None
    node: str
    resources: Resources
    gpu_indices: tuple[int, ...]
    walltime_s: int
    kill_grace_s: int = 30
    # On preemption: this signal first, then SIGKILL after checkpoint_grace_s (Slurm's --signal).
    checkpoint_signal: int = 15
    checkpoint_grace_s: int | None = None  # None: kill_grace_s
    # Unix account the process runs as when the server is root (created on demand).
    run_as: str | None = None
    # The workdir is the tenant's default workspace: create it, owned by ``run_as``, if missing.
    create_workdir: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    # Run in a bubblewrap sandbox over this image's root (copy on write), the workdir bound in.
    image: JobImage | None = None
    # Run inside this virtual node (a job in a virtual cluster); the local driver only.
    vnode: VirtualNode | None = None

    @property
    def key(self) -> str:
        """Stable identity of this task; the unit of launch idempotency."""
        return f"{self.job_id}.{self.attempt}.{self.index}"


@dataclass(frozen=True, slots=True)
class TaskResult:
    outcome: TaskOutcome
    exit_code: int | None
    started_at: float | None
    finished_at: float
    message: str = ""
    signal: int | None = None


class Driver(Protocol):
    name: str

    def inventory(self) -> list[Node]: ...

    def node_names(self) -> frozenset[str]: ...

    def rendezvous(self, node: str) -> tuple[str, int]: ...

    def launch(self, spec: TaskSpec) -> Handle: ...

    def observe(self, handle: Handle) -> TaskResult | None: ...

    def stop(self, handle: Handle, reason: StopReason) -> None: ...

    def read_log(self, handle: Handle, stream: LogStream, offset: int, limit: int) -> bytes: ...

    def release(self, handle: Handle) -> None: ...


@runtime_checkable
class PortReach(Protocol):
    """A driver whose tasks' ports the server can reach (``virtuai port-forward``).

    ``listener(handle, port)`` is the address at which the task *itself* listens on
    ``port`` (a process of the task holds the listening socket), reachable from the
    server; ``None`` when nothing of the task listens there.
    """

    def listener(self, handle: Handle, port: int) -> str | None: ...
