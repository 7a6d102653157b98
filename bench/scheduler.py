"""Benchmark of one scheduling pass on a synthetic cluster (``docs/benchmarks.md``, Scheduler).

Run: ``.venv/bin/python bench/scheduler.py`` (``--help`` for sizes, ``--profile``).

Inventory: light, fat and GPU pools (8 GPUs per GPU node); tenants in cohorts
with a tenant-wide nominal quota and a GPU-pool one, some with borrowing or
lending limits; a queue of mixed jobs: small and medium single tasks, CPU gangs,
GPU jobs and GPU gangs, three priority classes, walltimes from minutes to a day.

Passes measured (each on a fresh snapshot, timing ``schedule()`` only):

- ``fifo cold`` (the baseline): v1 policy, empty cluster, the whole queue;
- ``fair cold``: fair share + EASY backfill + preemption, empty cluster;
- ``fair steady N``: the cluster as left by the previous pass after time moved
  on and some jobs ended, with the same big queue (minus what started);
- ``preemption``: borrowers fill the cluster beyond their nominal quota and
  the lenders submit work, so the pass preempts.

The last line is ``decisions_per_s=<N> preemption_decisions_per_s=<M>``: ``N``
is the slowest of the fair cold and steady passes, ``M`` the preemption pass
(a decision is one pending job admitted, blocked or preempted for).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.domain.tenancy import ANY_POOL, PoolQuota, Quota
from virtuai.scheduler import schedule
from virtuai.scheduler.snapshot import (
    Decisions,
    HistoricalUsage,
    NodeState,
    PendingJob,
    Policy,
    RunningJob,
    Snapshot,
    TenantState,
)

Gi = 2**30
HOUR = 3600.0
FIFO = Policy.fifo()
FAIR = Policy.fair()


@dataclass(frozen=True)
class Sizes:
    nodes: int
    tenants: int
    cohorts: int
    jobs: int
    seed: int


def make_nodes(n: int) -> list[Node]:
    """60% light, 30% fat, 10% GPU nodes."""
    gpu_n, fat_n = n // 10, n * 3 // 10
    nodes = []
    for i in range(n - gpu_n - fat_n):
        nodes.append(Node(f"light-{i:05d}", "light", "bench", Resources(16_000, 64 * Gi)))
    for i in range(fat_n):
        nodes.append(Node(f"fat-{i:05d}", "fat", "bench", Resources(64_000, 512 * Gi)))
    for i in range(gpu_n):
        gpus = tuple(GpuDevice(g, "A100", 80 * Gi) for g in range(8))
        nodes.append(Node(f"gpu-{i:05d}", "gpu", "bench", Resources(64_000, 512 * Gi, 8), gpus))
    return nodes


def make_tenants(sizes: Sizes, nodes: Sequence[Node], rnd: random.Random) -> list[TenantState]:
    """Equal nominal shares of the cluster; a third may borrow at most their nominal again,
    a fifth lend only half of theirs."""
    cpu = sum(n.capacity.cpu_milli for n in nodes)
    memory = sum(n.capacity.memory for n in nodes)
    gpu = sum(n.capacity.gpu for n in nodes)
    k = sizes.tenants
    tenants = []
    for i in range(k):
        nominal = Quota(cpu // k, memory // k, gpu // k)
        borrow = Quota(cpu // k, memory // k, gpu // k) if i % 3 == 0 else Quota()
        lend = Quota(cpu // k // 2, memory // k // 2, gpu // k // 2) if i % 5 == 0 else Quota()
        gpu_entry = PoolQuota("gpu", Quota(gpu=gpu // k), Quota(), Quota())
        history = HistoricalUsage(
            rnd.random() * cpu / k * 86400, rnd.random() * memory / k * 86400, 0.0, 0.0
        )
        tenants.append(
            TenantState(
                f"t{i:02d}",
                Quota(),
                quotas=(PoolQuota(ANY_POOL, nominal, borrow, lend), gpu_entry),
                cohort=f"c{i % sizes.cohorts}",
                weight=1.0 + (i % 4),
                history=history,
            )
        )
    return tenants


_PRIORITIES = ((100, True), (500, True), (500, True), (500, True), (1000, False))


def make_job(i: int, tenant: str, rnd: random.Random, submitted: float) -> PendingJob:
    kind = rnd.random()
    pool: str | None = None
    tasks = 1
    if kind < 0.5:  # small
        per_task = Resources(rnd.choice((1, 2, 4)) * 1000, rnd.choice((2, 4, 8)) * Gi)
    elif kind < 0.7:  # medium, often on fat nodes
        per_task = Resources(rnd.choice((8, 16)) * 1000, rnd.choice((32, 64)) * Gi)
        pool = "fat" if rnd.random() < 0.5 else None
    elif kind < 0.8:  # CPU gang
        tasks = rnd.choice((4, 8, 16))
        per_task = Resources(rnd.choice((4, 8, 16)) * 1000, rnd.choice((16, 32)) * Gi)
    elif kind < 0.95:  # GPU job
        g = rnd.choice((1, 1, 2, 4, 8))
        per_task = Resources(g * 8000, g * 32 * Gi, g)
        pool = "gpu"
    else:  # GPU gang of whole nodes
        tasks = rnd.choice((2, 4, 8))
        per_task = Resources(64_000, 256 * Gi, 8)
        pool = "gpu"
    priority, preemptible = rnd.choice(_PRIORITIES)
    walltime = int(rnd.choice((0.25, 1, 2, 4, 8, 24)) * HOUR)
    return PendingJob(
        f"j{i}", tenant, priority, submitted, i, per_task, tasks, pool, walltime, preemptible
    )


def empty_states(nodes: Sequence[Node]) -> tuple[NodeState, ...]:
    return tuple(NodeState(n) for n in nodes)


def states_of(nodes: Sequence[Node], running: Sequence[RunningJob]) -> tuple[NodeState, ...]:
    held: dict[str, list[int]] = {}
    busy: dict[str, set[int]] = {}
    for job in running:
        for p in job.placements:
            h = held.setdefault(p.node, [0, 0, 0])
            h[0] += p.resources.cpu_milli
            h[1] += p.resources.memory
            h[2] += p.resources.gpu
            busy.setdefault(p.node, set()).update(p.gpu_indices)
    return tuple(
        NodeState(n, Resources(*held.get(n.name, [0, 0, 0])), frozenset(busy.get(n.name, ())))
        for n in nodes
    )


def started(
    decisions: Decisions, pending: Sequence[PendingJob], now: float
) -> tuple[list[RunningJob], list[PendingJob]]:
    """The admitted jobs as running jobs, and what is still pending."""
    by_id = {j.id: j for j in pending}
    running = []
    for a in decisions.admitted:
        job = by_id.pop(a.job_id)
        end = now + job.walltime_s if job.walltime_s is not None else None
        running.append(
            RunningJob(job.id, job.tenant, job.priority, a.placements, now, end, job.preemptible)
        )
    return running, list(by_id.values())


@dataclass
class Result:
    name: str
    running: int
    pending: int
    admitted: int
    blocked: int
    preempted: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.pending / self.seconds if self.seconds > 0 else float("inf")


def timed(name: str, snapshot: Snapshot, profile: bool) -> tuple[Result, Decisions]:
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    decisions = schedule(snapshot)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - t0
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
        print(f"--- profile: {name}\n{out.getvalue()}")
    result = Result(
        name,
        len(snapshot.running),
        len(snapshot.pending),
        len(decisions.admitted),
        len(decisions.blocked),
        len(decisions.preempted),
        seconds,
    )
    return result, decisions


def tenant_usage(
    tenants: Sequence[TenantState], running: Sequence[RunningJob]
) -> list[TenantState]:
    sums: dict[str, Resources] = {}
    for job in running:
        sums[job.tenant] = sums.get(job.tenant, Resources()) + job.total
    return [replace(t, usage=sums.get(t.name, Resources())) for t in tenants]


def run(sizes: Sizes, steady_passes: int, profile: bool) -> list[Result]:
    rnd = random.Random(sizes.seed)
    nodes = make_nodes(sizes.nodes)
    tenants = make_tenants(sizes, nodes, rnd)
    names = [t.name for t in tenants]
    pending = [make_job(i, rnd.choice(names), rnd, float(i % 3600)) for i in range(sizes.jobs)]
    states = empty_states(nodes)
    results = []

    base, _ = timed("fifo cold", Snapshot(states, tuple(tenants), tuple(pending)), profile)
    results.append(base)
    now = 3600.0
    snap = Snapshot(states, tuple(tenants), tuple(pending), (), now, FAIR)
    result, decisions = timed("fair cold", snap, profile)
    results.append(result)

    running, waiting = started(decisions, pending, now)
    for step in range(steady_passes):
        now += 1800.0
        # Jobs past their walltime ended; a tenth of the others ended early.
        running = [
            r
            for r in running
            if r.expected_end is not None and r.expected_end > now and rnd.random() > 0.1
        ]
        ts = tenant_usage(tenants, running)
        snap = Snapshot(
            states_of(nodes, running), tuple(ts), tuple(waiting), tuple(running), now, FAIR
        )
        result, decisions = timed(f"fair steady {step + 1}", snap, profile)
        results.append(result)
        fresh, waiting = started(decisions, waiting, now)
        running += fresh

    results.append(preemption_pass(sizes, nodes, tenants, rnd, profile))
    return results


def preemption_pass(
    sizes: Sizes,
    nodes: Sequence[Node],
    tenants: Sequence[TenantState],
    rnd: random.Random,
    profile: bool,
) -> Result:
    """Two tenants per cohort fill the cluster by borrowing; the others then submit."""
    borrowers = {t.name for i, t in enumerate(tenants) if i // sizes.cohorts < 2}
    lenders = sorted(t.name for t in tenants if t.name not in borrowers)
    fill = [
        make_job(i, rnd.choice(sorted(borrowers)), rnd, 0.0)
        for i in range(sizes.jobs // 2)  # more than fits
    ]
    fill = [replace(j, priority=500, preemptible=True) for j in fill]
    filler = Snapshot(empty_states(nodes), tuple(tenants), tuple(fill), (), 0.0, FIFO)
    running, _ = started(schedule(filler), fill, 0.0)
    now = 600.0
    owners = [
        make_job(sizes.jobs + i, rnd.choice(lenders), rnd, now) for i in range(sizes.jobs // 5)
    ]
    more = [
        make_job(2 * sizes.jobs + i, rnd.choice(sorted(borrowers)), rnd, now)
        for i in range(sizes.jobs - len(owners))
    ]
    ts = tenant_usage(tenants, running)
    snap = Snapshot(
        states_of(nodes, running), tuple(ts), tuple(owners + more), tuple(running), now, FAIR
    )
    result, _ = timed("preemption", snap, profile)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--cohorts", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--steady", type=int, default=2, help="steady-state passes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile every pass")
    args = parser.parse_args()
    sizes = Sizes(args.nodes, args.tenants, args.cohorts, args.jobs, args.seed)
    t0 = time.perf_counter()
    results = run(sizes, args.steady, args.profile)
    base = results[0]
    print(
        f"{sizes.nodes} nodes, {sizes.tenants} tenants in {sizes.cohorts} cohorts, "
        f"{sizes.jobs} jobs (seed {sizes.seed})"
    )
    print(
        f"{'pass':<16}{'running':>9}{'pending':>9}{'admitted':>10}{'blocked':>9}{'preempted':>11}"
        f"{'seconds':>9}{'decisions/s':>13}{'vs fifo':>9}"
    )
    for r in results:
        print(
            f"{r.name:<16}{r.running:>9}{r.pending:>9}{r.admitted:>10}{r.blocked:>9}{r.preempted:>11}"
            f"{r.seconds:>9.2f}{r.rate:>13,.0f}{r.seconds / base.seconds:>8.2f}x"
        )
    fair = [r for r in results if r.name.startswith("fair")]
    print(f"total wall time {time.perf_counter() - t0:.1f}s (generation included)")
    print(
        f"decisions_per_s={min(r.rate for r in fair):.0f} "
        f"preemption_decisions_per_s={results[-1].rate:.0f}"
    )


if __name__ == "__main__":
    main()
