"""Small builders for scheduler tests: nodes, tenants, jobs and snapshots in user units."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.domain.tenancy import ANY_POOL, PoolQuota, Quota
from virtuai.domain.units import parse_cpu, parse_memory
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler.snapshot import (
    HistoricalUsage,
    NodeState,
    PendingJob,
    Policy,
    RunningJob,
    Snapshot,
    TenantState,
)

FAIR = Policy.fair()

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
    walltime: int | None = None,
    preemptible: bool = True,
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
        walltime_s=walltime,
        preemptible=preemptible,
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


def quota(
    cpu: str | float | None = None, memory: str | int | None = None, gpu: int | None = None
) -> Quota:
    return Quota(
        None if cpu is None else parse_cpu(cpu),
        None if memory is None else parse_memory(memory),
        gpu,
    )


def member(
    name: str,
    cohort: str | None = "science",
    nominal: Quota = Quota(),  # noqa: B008 - frozen, shared safely
    borrow: Quota = Quota(),  # noqa: B008
    lend: Quota = Quota(),  # noqa: B008
    pool: str = ANY_POOL,
    weight: float = 1.0,
    history: HistoricalUsage = HistoricalUsage(),  # noqa: B008
    extra: tuple[PoolQuota, ...] = (),
) -> TenantState:
    """A tenant with one quota entry (``pool``), in ``cohort``."""
    entry = PoolQuota(pool, nominal, borrow, lend)
    return TenantState(
        name, Quota(), quotas=(entry, *extra), cohort=cohort, weight=weight, history=history
    )


def run(
    id: str,
    where: str | list[tuple[str, tuple[int, ...]]],
    *,
    tenant: str = "physics",
    cpu: str | float = 1,
    memory: str | int = "1Gi",
    gpu: int = 0,
    priority: int = 500,
    started_at: float = 0.0,
    end: float | None = None,
    preemptible: bool = True,
    preempting: bool = False,
    preempted_for: str | None = None,
) -> RunningJob:
    """A running job; ``where`` is a node name or a list of (node, gpu indices) per task."""
    tasks = [(where, tuple(range(gpu)))] if isinstance(where, str) else where
    placements = tuple(
        TaskPlacement(i, n, res(cpu, memory, len(g) if g else gpu), g)
        for i, (n, g) in enumerate(tasks)
    )
    return RunningJob(
        id,
        tenant,
        priority,
        placements,
        started_at=started_at,
        expected_end=end,
        preemptible=preemptible,
        preempting=preempting,
        preempted_for=preempted_for,
    )


def world(
    nodes: Iterable[Node],
    pending: Iterable[PendingJob],
    tenants: Iterable[TenantState] = (),
    running: Iterable[RunningJob] = (),
    *,
    policy: Policy = FAIR,
    now: float = 0.0,
) -> Snapshot:
    """A snapshot whose nodes' allocations are exactly what ``running`` holds."""
    jobs = tuple(running)
    states = []
    for n in nodes:
        held = Resources()
        busy: set[int] = set()
        for j in jobs:
            for p in j.placements:
                if p.node == n.name:
                    held = held + p.resources
                    busy.update(p.gpu_indices)
        states.append(NodeState(n, held, frozenset(busy)))
    return Snapshot(tuple(states), tuple(tenants), tuple(pending), jobs, now, policy)
