"""The scheduler's input (a snapshot of the world) and output (decisions).

The control plane builds a ``Snapshot`` from the database, the simulator
builds one from a trace; both hand it to the same pure ``schedule()``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from virtuai.domain.resources import ZERO, Node, Resources
from virtuai.domain.tenancy import Quota
from virtuai.domain.workload import TaskPlacement


@dataclass(frozen=True, slots=True)
class NodeState:
    node: Node
    allocated: Resources = ZERO
    busy_gpus: frozenset[int] = frozenset()

    @property
    def free(self) -> Resources:
        return self.node.capacity - self.allocated


@dataclass(frozen=True, slots=True)
class TenantState:
    name: str
    quota: Quota
    # What the tenant's admitted, not yet finished work holds now.
    usage: Resources = ZERO


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A job waiting for admission. ``seq`` breaks ties deterministically (submit order)."""

    id: str
    tenant: str
    priority: int
    submitted_at: float
    seq: int
    per_task: Resources
    tasks: int = 1
    pool: str | None = None  # restrict to one pool; None = any

    @property
    def total(self) -> Resources:
        return self.per_task.times(self.tasks)


@dataclass(frozen=True, slots=True)
class Snapshot:
    nodes: tuple[NodeState, ...]
    tenants: tuple[TenantState, ...]
    pending: tuple[PendingJob, ...]


class BlockKind(enum.StrEnum):
    QUOTA = "quota"  # the tenant's quota is full for now
    CAPACITY = "capacity"  # not enough free resources on the nodes now
    QUEUE = "queue"  # a job ahead of it in the queue is waiting for resources
    NEVER = "never"  # cannot run even on an empty cluster within its quota


@dataclass(frozen=True, slots=True)
class Admission:
    job_id: str
    placements: tuple[TaskPlacement, ...]


@dataclass(frozen=True, slots=True)
class Blocked:
    job_id: str
    kind: BlockKind
    reason: str  # plain words, shown to the user as the pending reason
    position: int = 0  # 1-based place among the jobs still waiting


@dataclass(frozen=True, slots=True)
class Decisions:
    admitted: tuple[Admission, ...] = ()
    blocked: tuple[Blocked, ...] = ()
