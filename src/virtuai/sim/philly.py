"""Philly-shaped GPU traces, reproducible from a seed.

The shape follows what Microsoft published about its Philly cluster (Jeon et al.,
"Analysis of Large-Scale Multi-Tenant GPU Clusters for DNN Training Workloads",
USENIX ATC 2019) and what Tiresias (NSDI 2019) replays from it:

- **GPUs per job**: mostly 1 (about 70% of jobs), then 2, 4 and 8 (one node), and a
  thin tail of multi-node gangs of 16, 32 and 64 GPUs (8 per task) that hold a
  large part of the GPU-time;
- **durations**: heavy-tailed; about a third of jobs end within minutes (failed or
  killed early: Philly reports ~30% unsuccessful jobs, most of them quick); the
  rest log-normal with a median of about 1.5 h, longer for bigger jobs; capped at
  3 days;
- **users**: a few heavy tenants submit most jobs (shares 35/20/15/12/10/8% over
  6 tenants), in *bursts* of like jobs (hyper-parameter sweeps: a geometric number
  of copies, mean 6), and submissions follow the working day (a daily sine);
- **walltimes** overestimate durations 1.2-4x (rounded up to 30 min), as users do
  who estimate (``walltimes="estimate"``, the default).  Two poorer kinds, as many
  clusters see them: ``"default"``, everyone asks for the partition's limit (3 days,
  Slurm's default when no ``--time`` is given), and ``"none"``, no walltime at all.

``philly_cluster(nodes)`` is ``nodes`` machines of 8 GPUs in one pool;
``philly_trace(cluster, jobs, seed, load)`` spreads ``jobs`` over a window chosen
so that the offered GPU work is ``load`` times the GPU capacity of the window:
above 1, queueing dominates (the "heavy" regime, like the issue's 4-day variant);
well below 1, JCT is close to the duration (the "light" regime).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from virtuai.domain.resources import Resources
from virtuai.sim.cluster import DEFAULT_PRIORITIES, ClusterSpec, PoolSpec, TenantSpec
from virtuai.sim.trace import TraceJob

__all__ = ["PHILLY_TENANTS", "WALLTIMES", "Regime", "philly_cluster", "philly_trace", "regime"]

Gi = 2**30
DAY = 86400.0
PHILLY_TENANTS = ("vision", "speech", "nlp", "ads", "search", "research")
_TENANT_SHARES = (0.35, 0.20, 0.15, 0.12, 0.10, 0.08)
# GPUs per job and their odds (jobs, not GPU-time).
_GPUS = ((1, 0.70), (2, 0.10), (4, 0.09), (8, 0.07), (16, 0.025), (32, 0.01), (64, 0.005))
_MAX_S = 3 * DAY
WALLTIMES = ("estimate", "default", "none")  # how users state time limits (see above)


@dataclass(frozen=True, slots=True)
class Regime:
    """The two published regimes the issue asks about, at a given size."""

    name: str
    load: float


def regime(name: str) -> Regime:
    """``heavy``: queueing dominates (offered load 1.2x capacity, peaks near 2x by day);
    ``light``: load 0.45."""
    if name == "heavy":
        return Regime("heavy", 1.2)
    if name == "light":
        return Regime("light", 0.45)
    raise ValueError(f"no regime {name!r}; there are heavy and light")


def philly_cluster(nodes: int = 64, *, name: str | None = None) -> ClusterSpec:
    """``nodes`` machines of 8 GPUs (V100-like: 48 CPUs, 448Gi) shared by the 6 tenants."""
    if nodes < 1:
        raise ValueError("a cluster needs at least one node")
    pool = PoolSpec("gpu", nodes, 48_000, 448 * Gi, 8, "V100", 32 * Gi)
    tenants = tuple(TenantSpec(t) for t in PHILLY_TENANTS)
    return ClusterSpec(name or f"philly-{nodes}", (pool,), tenants, dict(DEFAULT_PRIORITIES))


def _duration(rng: random.Random, gpus: int) -> float:
    if rng.random() < 0.33:  # failed or killed early
        return float(min(_MAX_S, max(30, round(rng.lognormvariate(math.log(300), 1.0)))))
    median = 1800.0 * (1.0 + 0.35 * math.log2(gpus))
    return float(min(_MAX_S, max(60, round(rng.lognormvariate(math.log(median), 1.5)))))


def philly_trace(
    cluster: ClusterSpec,
    jobs: int = 20_000,
    *,
    seed: int = 1,
    load: float = 1.2,
    burst: float = 6.0,
    walltimes: str = "estimate",
) -> list[TraceJob]:
    """``jobs`` Philly-shaped jobs at offered GPU ``load`` (see the module docstring).

    ``walltimes``: ``estimate`` (1.2-4x the duration), ``default`` (3 days for every
    job) or ``none``; the jobs and their times are the same for all three."""
    if jobs < 0 or load <= 0 or burst < 0:
        raise ValueError("jobs must be >= 0, load > 0 and burst >= 0")
    if walltimes not in WALLTIMES:
        raise ValueError(f"walltimes must be one of {', '.join(WALLTIMES)}, not {walltimes!r}")
    rng = random.Random(seed)
    tenants = [t.name for t in cluster.tenants] or list(PHILLY_TENANTS)
    shares = [_TENANT_SHARES[k % len(_TENANT_SHARES)] for k in range(len(tenants))]
    pool = max(cluster.pools, key=lambda p: p.gpus)
    per_gpu_cpu = pool.cpu_milli // max(1, pool.gpus)
    per_gpu_mem = pool.memory // max(1, pool.gpus)
    biggest = pool.count * pool.gpus
    gpu_choices = [(g, w) for g, w in _GPUS if g <= biggest] or [(1, 1.0)]
    normal = DEFAULT_PRIORITIES["normal"]
    p_more = burst / (1.0 + burst)

    drafts: list[tuple[int, str, int, float, float]] = []  # burst, tenant, gpus, dur, wall
    bursts = 0
    while len(drafts) < jobs:
        tenant = rng.choices(tenants, shares)[0]
        gpus = rng.choices([g for g, _ in gpu_choices], [w for _, w in gpu_choices])[0]
        size = 1
        while rng.random() < p_more:
            size += 1
        base = _duration(rng, gpus)
        for _ in range(min(size, jobs - len(drafts))):
            duration = float(max(30, round(base * rng.uniform(0.5, 1.5))))
            walltime = 1800.0 * math.ceil(duration * rng.uniform(1.2, 4.0) / 1800.0)
            drafts.append((bursts, tenant, gpus, duration, walltime))
        bursts += 1

    # Submission times: a Poisson process of bursts whose rate follows the working day
    # (1 +- 0.6 sin), over a window in which the offered GPU-work is ``load`` x the
    # capacity.  Offered work beyond the window's capacity is what makes queues build.
    work = sum(d[2] * d[3] for d in drafts)
    span = max(1.0, work / (biggest * load)) if biggest else DAY
    times: list[int] = []
    while len(times) < bursts:
        t = rng.uniform(0.0, span)
        if rng.random() * 1.6 <= 1.0 + 0.6 * math.sin(2 * math.pi * t / DAY - math.pi / 2):
            times.append(math.floor(t))
    times.sort()
    out = []
    for n, (b, tenant, gpus, duration, estimate) in enumerate(drafts):
        # (The estimate is drawn either way, so the three kinds share every other draw.)
        walltime = {"estimate": estimate, "default": _MAX_S, "none": math.inf}[walltimes]
        tasks, per = (gpus // 8, 8) if gpus > 8 else (1, gpus)
        per_task = Resources(per * per_gpu_cpu, per * per_gpu_mem, per)
        out.append(
            TraceJob(
                id=str(n + 1),
                submit=float(times[b]),
                duration=duration,
                walltime=walltime,
                tenant=tenant,
                per_task=per_task,
                tasks=tasks,
                priority=normal.value,
                preemptible=True,
            )
        )
    out.sort(key=lambda j: j.submit)
    return out
