"""Synthetic clusters and traces, reproducible from a seed.

``generate_cluster(nodes, tenants)`` makes a ``gpu`` pool (a quarter of the
nodes: 64 CPUs, 512Gi, 8 GPUs each) and a ``cpu`` pool (32 CPUs, 128Gi), and
tenants with equal weights.

``generate_trace(cluster, jobs, seed, load)`` draws jobs the way a shared
research cluster sees them:

- tenants submit in *bursts* (a parameter sweep, an array job): a burst is
  1 + a geometric number of jobs (mean ``burst``) of one tenant, all submitted
  in the same second; bursts arrive as a Poisson process;
- each tenant has a profile that sets how much of its work uses GPUs and how
  often it runs gangs (multi-node jobs): ``gpu`` (mostly 1-8 GPU jobs, some
  2-4 node gangs of 8 GPUs), ``mixed``, ``cpu`` (CPU jobs, MPI-like gangs) and
  ``small`` (many short 1-GPU jobs); tenant *k* gets profile *k* mod 4;
- durations are log-normal (median 20 min for CPU jobs, 1 h for GPU jobs,
  sigma 1.4, from 30 s to 2 days); walltimes overestimate them 1.1-3x, rounded
  up to 5 minutes, except 5% of jobs that run out of time (``timed_out``);
- priorities: 80% normal, 10% low, 10% high;
- the bursts are spread over a span chosen so that the offered work is ``load``
  times the cluster's capacity on its busiest resource (CPU or GPU).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from virtuai.domain.resources import Resources
from virtuai.domain.workload import PriorityClass
from virtuai.sim.cluster import DEFAULT_PRIORITIES, ClusterSpec, PoolSpec, TenantSpec
from virtuai.sim.trace import TraceJob

__all__ = ["TENANT_NAMES", "generate_cluster", "generate_trace"]

Gi = 2**30
MAX_BURST = 10_000  # mean extra jobs a burst: each extra job is a draw of the generator
TENANT_NAMES = ("physics", "biology", "climate", "vision")
_PROFILES = ("gpu", "mixed", "cpu", "small")


@dataclass(frozen=True, slots=True)
class _Profile:
    gpu_share: float  # probability that a job uses GPUs
    gang_share: float  # probability that a job is a multi-node gang
    short: bool = False  # mostly short jobs


_PROFILE = {
    "gpu": _Profile(0.85, 0.10),
    "mixed": _Profile(0.45, 0.05),
    "cpu": _Profile(0.10, 0.20),
    "small": _Profile(0.70, 0.0, short=True),
}


def tenant_names(count: int) -> list[str]:
    """``physics, biology, climate, vision``, then ``tenant-05`` ..."""
    return [
        TENANT_NAMES[k] if k < len(TENANT_NAMES) else f"tenant-{k + 1:02d}" for k in range(count)
    ]


def generate_cluster(nodes: int = 20, tenants: int = 4, *, name: str | None = None) -> ClusterSpec:
    """A cluster of ``nodes`` nodes (a quarter with 8 GPUs) shared by ``tenants`` equal tenants."""
    if nodes < 2:
        raise ValueError("a generated cluster needs at least 2 nodes (one per pool)")
    gpu_nodes = max(1, nodes // 4)
    pools = (
        PoolSpec("gpu", gpu_nodes, 64_000, 512 * Gi, 8, "A100", 80 * Gi),
        PoolSpec("cpu", nodes - gpu_nodes, 32_000, 128 * Gi),
    )
    specs = tuple(TenantSpec(t) for t in tenant_names(tenants))
    return ClusterSpec(name or f"synthetic-{nodes}", pools, specs, dict(DEFAULT_PRIORITIES))


def _weighted(rng: random.Random, choices: Sequence[tuple[int, float]]) -> int:
    values = [c[0] for c in choices]
    weights = [c[1] for c in choices]
    return rng.choices(values, weights)[0]


def _lognormal(rng: random.Random, median: float, sigma: float, low: float, high: float) -> float:
    return min(high, max(low, round(rng.lognormvariate(math.log(median), sigma))))


def _shape(
    rng: random.Random, profile: _Profile, gpu_nodes: int, gpu_node: Resources, cpu_node: Resources
) -> tuple[Resources, int, float]:
    """Per-task resources, task count and median duration of one job."""
    gang = rng.random() < profile.gang_share
    if rng.random() < profile.gpu_share and gpu_node.gpu:
        node = gpu_node
        if gang and gpu_nodes >= 2:
            tasks = rng.choice([t for t in (2, 4) if 2 * t <= gpu_nodes] or [2])
            gpus = node.gpu
        else:
            tasks = 1
            gpus = (
                1 if profile.short else _weighted(rng, [(1, 0.45), (2, 0.25), (4, 0.15), (8, 0.15)])
            )
            gpus = min(gpus, node.gpu)
        per_gpu_cpu = min(node.cpu_milli // node.gpu, rng.choice([4000, 8000]))
        per_gpu_mem = min(node.memory // node.gpu, rng.choice([32 * Gi, 64 * Gi]))
        per_task = Resources(gpus * per_gpu_cpu, gpus * per_gpu_mem, gpus)
        return per_task, tasks, 900.0 if profile.short else 3600.0
    if gang:
        tasks = rng.choice([2, 4, 8])
        cpus = rng.choice([16, 32])
    else:
        tasks = 1
        cpus = _weighted(rng, [(1, 0.1), (2, 0.15), (4, 0.2), (8, 0.25), (16, 0.2), (32, 0.1)])
    cpu = min(cpu_node.cpu_milli, cpus * 1000)
    memory = min(cpu_node.memory, cpus * rng.choice([2 * Gi, 4 * Gi, 8 * Gi]))
    return Resources(cpu, memory, 0), tasks, 2400.0


def generate_trace(
    cluster: ClusterSpec,
    jobs: int = 2000,
    *,
    seed: int = 1,
    load: float = 0.7,
    burst: float = 4.0,
) -> list[TraceJob]:
    """``jobs`` jobs for the tenants of ``cluster`` (see the module's docstring)."""
    if jobs < 0 or not 0 < load < math.inf or not 0 <= burst <= MAX_BURST:
        raise ValueError(f"jobs must be >= 0, load > 0 and finite, burst 0 to {MAX_BURST}")
    rng = random.Random(seed)
    names = [t.name for t in cluster.tenants] or list(TENANT_NAMES)
    gpu_pools = [p for p in cluster.pools if p.gpus]
    gpu_nodes = max((p.count for p in gpu_pools), default=0)
    gpu_node = gpu_pools[0].node_capacity if gpu_pools else Resources()
    cpu_node = max(cluster.pools, key=lambda p: (p.gpus == 0, p.cpu_milli)).node_capacity
    classes = [DEFAULT_PRIORITIES[n] for n in ("normal", "low", "high")]
    odds = (0.8, 0.1, 0.1)

    drafts: list[tuple[int, str, Resources, int, float, float, PriorityClass]] = []
    bursts = 0
    p_more = burst / (1.0 + burst)  # geometric number of extra jobs with mean ``burst``
    while len(drafts) < jobs:
        k = rng.randrange(len(names))
        tenant, profile = names[k], _PROFILE[_PROFILES[k % len(_PROFILES)]]
        size = 1
        while rng.random() < p_more:
            size += 1
        for _ in range(min(size, jobs - len(drafts))):
            per_task, tasks, median = _shape(rng, profile, gpu_nodes, gpu_node, cpu_node)
            duration = _lognormal(rng, median, 1.4, 30, 86400)
            if rng.random() < 0.05:
                walltime = max(60.0, math.floor(duration * rng.uniform(0.3, 0.9)))
            else:
                walltime = 300.0 * math.ceil(duration * rng.uniform(1.1, 3.0) / 300.0)
            priority = rng.choices(classes, odds)[0]
            drafts.append((bursts, tenant, per_task, tasks, duration, walltime, priority))
        bursts += 1

    # Spread the bursts so that the offered work is ``load`` x the busiest resource.
    capacity = cluster.capacity
    work_cpu = sum(d[2].cpu_milli * d[3] * min(d[4], d[5]) for d in drafts)
    work_gpu = sum(d[2].gpu * d[3] * min(d[4], d[5]) for d in drafts)
    span = (
        max(
            work_cpu / capacity.cpu_milli if capacity.cpu_milli else 0.0,
            work_gpu / capacity.gpu if capacity.gpu else 0.0,
        )
        / load
    )
    gaps = [rng.expovariate(1.0) for _ in range(bursts)]
    scale = span / sum(gaps) if gaps and sum(gaps) > 0 else 0.0
    starts, clock = [], 0.0
    for gap in gaps:
        starts.append(float(math.floor(clock)))
        clock += gap * scale
    return [
        TraceJob(
            id=str(n + 1),
            submit=starts[b],
            duration=float(duration),
            walltime=float(walltime),
            tenant=tenant,
            per_task=per_task,
            tasks=tasks,
            priority=priority.value,
            preemptible=priority.preemptible,
        )
        for n, (b, tenant, per_task, tasks, duration, walltime, priority) in enumerate(drafts)
    ]
