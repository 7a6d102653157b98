"""Small builders for scheduler tests: nodes, tenants, jobs and snapshots in user units."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.domain.tenancy import Quota
from virtuai.domain.units import parse_cpu, parse_memory
from virtuai.scheduler.snapshot import NodeState, PendingJob, Snapshot, TenantState

Gi = 2**30
_seq = itertools.count(1)


def res(cpu: str | float = 0, memory: str | int = 0, gpu: int = 0) -> Resources:
    return Resources(parse_cpu(cpu), parse_memory(memory), gpu)


def node(
    name: str,
    cpu: str | float = 8,
    memory: str | int = "32Gi",
    gpus: int = 0,
    pool: str = "default",
) -> Node:
    devices = tuple(GpuDevice(i, "A100", 80 * Gi, f"GPU-{name}-{i}") for i in range(gpus))
    return Node(name, pool, "local", res(cpu, memory, gpus), devices)


def state(
    n: Node,
    cpu: str | float = 0,
    memory: str | int = 0,
    busy: Iterable[int] = (),
) -> NodeState:
    """A node with ``cpu``/``memory`` and the GPUs ``busy`` already allocated."""
    busy_set = frozenset(busy)
    return NodeState(n, res(cpu, memory, len(busy_set)), busy_set)


def job(
    id: str,
    *,
    tenant: str = "physics",
    cpu: str | float = 1,
    memory: str | int = "1Gi",
    gpu: int = 0,
    tasks: int = 1,
    priority: int = 500,
    submitted_at: float = 0.0,
    seq: int | None = None,
    pool: str | None = None,
) -> PendingJob:
    return PendingJob(
        id=id,
        tenant=tenant,
        priority=priority,
        submitted_at=submitted_at,
        seq=next(_seq) if seq is None else seq,
        per_task=res(cpu, memory, gpu),
        tasks=tasks,
        pool=pool,
    )


def tenant(
    name: str,
    cpu: str | float | None = None,
    memory: str | int | None = None,
    gpu: int | None = None,
    usage: Resources = Resources(),  # noqa: B008 - frozen, shared safely
) -> TenantState:
    quota = Quota(
        None if cpu is None else parse_cpu(cpu),
        None if memory is None else parse_memory(memory),
        gpu,
    )
    return TenantState(name, quota, usage)


def snap(
    nodes: Iterable[Node | NodeState],
    pending: Iterable[PendingJob],
    tenants: Iterable[TenantState] = (),
) -> Snapshot:
    states = tuple(n if isinstance(n, NodeState) else NodeState(n) for n in nodes)
    return Snapshot(states, tuple(tenants), tuple(pending))
