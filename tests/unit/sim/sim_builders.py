"""Small builders for simulator tests: clusters and jobs in user units."""

from __future__ import annotations

import math

from virtuai.domain.resources import Resources
from virtuai.domain.units import parse_cpu, parse_memory
from virtuai.sim.cluster import ClusterSpec, PoolSpec, TenantSpec
from virtuai.sim.trace import TraceJob

Gi = 2**30


def pool(
    name: str = "gpu", count: int = 1, cpu: str | int = 8, memory: str = "64Gi", gpus: int = 0
) -> PoolSpec:
    return PoolSpec(name, count, parse_cpu(cpu), parse_memory(memory), gpus, "A100", 80 * Gi)


def cluster(*pools: PoolSpec, tenants: tuple[TenantSpec, ...] = ()) -> ClusterSpec:
    return ClusterSpec("test", pools or (pool(),), tenants)


def job(
    id: str,
    submit: float = 0.0,
    duration: float = 100.0,
    *,
    walltime: float = math.inf,
    tenant: str = "physics",
    cpu: str | int = 1,
    memory: str = "1Gi",
    gpus: int = 0,
    tasks: int = 1,
    priority: int = 500,
    preemptible: bool = True,
    pool: str | None = None,
) -> TraceJob:
    return TraceJob(
        id=id,
        submit=submit,
        duration=duration,
        walltime=walltime,
        tenant=tenant,
        per_task=Resources(parse_cpu(cpu), parse_memory(memory), gpus),
        tasks=tasks,
        priority=priority,
        pool=pool,
        preemptible=preemptible,
    )
