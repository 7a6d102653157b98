"""Invariants of schedule() on random small clusters, and agreement with a naive oracle.

The oracle below re-implements the rules with plain loops over every node, the
way core.py's docstring states them; the fast scheduler (buckets, chunked indexes,
caches) must make exactly the same admissions and placements.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st
from sched_builders import Gi

from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.domain.tenancy import Quota
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler import never_runs_reason, queue_order, schedule
from virtuai.scheduler.snapshot import (
    BlockKind,
    Decisions,
    NodeState,
    PendingJob,
    Snapshot,
    TenantState,
)

TENANTS = ("physics", "chemistry", "biology", "maths", "art")
HALF_GI = Gi // 2


@st.composite
def node_states(draw: st.DrawFn, name: str) -> NodeState:
    gpus = draw(st.sampled_from([0, 0, 0, 1, 2, 4, 8]))
    pool = "gpu" if gpus else draw(st.sampled_from(["cpu", "cpu", "gpu"]))
    # Device indices need not be 0..n-1 (a node may hide some devices).
    indices = sorted(draw(st.sets(st.integers(0, 9), min_size=gpus, max_size=gpus)))
    devices = tuple(GpuDevice(i, "A100", 80 * Gi) for i in indices)
    capacity = Resources(draw(st.integers(1, 32)) * 500, draw(st.integers(1, 64)) * HALF_GI, gpus)
    busy = frozenset(draw(st.sets(st.sampled_from(indices))) if indices else ())
    allocated = Resources(
        draw(st.integers(0, capacity.cpu_milli // 250)) * 250,
        draw(st.integers(0, capacity.memory // HALF_GI)) * HALF_GI,
        len(busy),
    )
    return NodeState(Node(name, pool, "local", capacity, devices), allocated, busy)


def limits(scale: int, top: int) -> st.SearchStrategy[int | None]:
    return st.one_of(st.none(), st.integers(0, top).map(lambda n: n * scale))


@st.composite
def tenant_states(draw: st.DrawFn, name: str) -> TenantState:
    quota = Quota(draw(limits(1000, 32)), draw(limits(Gi, 64)), draw(limits(1, 8)))
    usage = Resources(
        draw(st.integers(0, 16)) * 1000, draw(st.integers(0, 32)) * Gi, draw(st.integers(0, 4))
    )
    return TenantState(name, quota, usage)


@st.composite
def pending_jobs(draw: st.DrawFn, id: str, tenants: list[str]) -> PendingJob:
    return PendingJob(
        id=id,
        tenant=draw(st.sampled_from([*tenants, "ghost"])),
        priority=draw(st.sampled_from([100, 500, 500, 1000])),
        submitted_at=float(draw(st.integers(0, 5))),
        seq=draw(st.integers(0, 60)),  # ties allowed: the id breaks them
        per_task=Resources(
            draw(st.integers(0, 8)) * 500,
            draw(st.integers(0, 16)) * HALF_GI,
            draw(st.sampled_from([0, 0, 0, 1, 1, 2, 4])),
        ),
        tasks=draw(st.sampled_from([1, 1, 1, 2, 3, 4])),
        pool=draw(st.sampled_from([None, None, "cpu", "gpu", "fat"])),
    )


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    n_nodes = draw(st.integers(1, 8))
    nodes = [draw(node_states(f"node-{i}")) for i in range(n_nodes)]
    tenants = [draw(tenant_states(name)) for name in TENANTS[: draw(st.integers(1, 5))]]
    names = [t.name for t in tenants]
    jobs = [draw(pending_jobs(f"job-{i}", names)) for i in range(draw(st.integers(0, 40)))]
    return Snapshot(tuple(nodes), tuple(tenants), tuple(jobs))


# --- a naive oracle ----------------------------------------------------------------------


def astuple(r: Resources) -> tuple[int, int, int]:
    return (r.cpu_milli, r.memory, r.gpu)


def _fits(free: tuple[int, int, int], need: Resources) -> int:
    counts = [have // want for have, want in zip(free, astuple(need), strict=True) if want > 0]
    return min(counts, default=10**9)


@dataclass
class _Free:
    cpu: int
    memory: int
    gpu_budget: int
    devices: list[int]

    @property
    def gpu(self) -> int:
        return max(0, min(self.gpu_budget, len(self.devices)))

    def copy(self) -> _Free:
        return replace(self, devices=list(self.devices))


def _usable_gpus(s: NodeState) -> int:
    return min(s.node.capacity.gpu, len(s.node.gpus))


def naive_schedule(snapshot: Snapshot) -> list[tuple[str, object]]:
    """The rules in their plainest form: a loop over every node for every task."""
    nodes = sorted(snapshot.nodes, key=lambda s: s.node.name)
    free = {
        s.node.name: _Free(
            s.free.cpu_milli,
            s.free.memory,
            _usable_gpus(s) - s.allocated.gpu,
            sorted({g.index for g in s.node.gpus} - s.busy_gpus),
        )
        for s in nodes
    }
    quota = {t.name: t.quota for t in snapshot.tenants}
    usage = {t.name: list(astuple(t.usage)) for t in snapshot.tenants}
    out: list[tuple[str, object]] = []
    head_blocked = False
    for job in queue_order(snapshot.pending):
        q = quota.get(job.tenant, Quota())
        pool_nodes = [s for s in nodes if job.pool is None or s.node.pool == job.pool]
        idle = sum(
            _fits(
                (s.node.capacity.cpu_milli, s.node.capacity.memory, _usable_gpus(s)), job.per_task
            )
            for s in pool_nodes
        )
        if job.tasks < 1 or idle < job.tasks or q.exceeded_by(job.total):
            out.append((job.id, BlockKind.NEVER))
            continue
        used = usage.setdefault(job.tenant, [0, 0, 0])
        asks = astuple(job.total)
        over = False
        for i, name in enumerate(("cpu", "memory", "gpu")):
            limit = q.limit_of(name)
            over = over or (limit is not None and asks[i] > 0 and used[i] + asks[i] > limit)
        if over:
            out.append((job.id, BlockKind.QUOTA))
            continue
        if head_blocked:
            out.append((job.id, BlockKind.QUEUE))
            continue
        trial = {name: f.copy() for name, f in free.items()}
        placements: list[TaskPlacement] = []
        c, m, g = astuple(job.per_task)
        for index in range(job.tasks):
            candidates = [
                (f.gpu - g, f.cpu - c, f.memory - m, s.node.name)
                for s in pool_nodes
                for f in [trial[s.node.name]]
                if f.cpu >= c and f.memory >= m and f.gpu >= g
            ]
            if not candidates:
                break
            f = trial[min(candidates)[3]]
            f.cpu, f.memory, f.gpu_budget = f.cpu - c, f.memory - m, f.gpu_budget - g
            devices, f.devices = tuple(f.devices[:g]), f.devices[g:]
            placements.append(TaskPlacement(index, min(candidates)[3], job.per_task, devices))
        if len(placements) < job.tasks:
            head_blocked = True
            out.append((job.id, BlockKind.CAPACITY))
            continue
        free = trial
        for i in range(3):
            used[i] += asks[i]
        out.append((job.id, tuple(placements)))
    return out


def flatten(decisions: Decisions, snapshot: Snapshot) -> list[tuple[str, object]]:
    """Decisions in queue order as (job id, kind or placements)."""
    by_id: dict[str, object] = {a.job_id: a.placements for a in decisions.admitted}
    by_id.update({b.job_id: b.kind for b in decisions.blocked})
    return [(job.id, by_id[job.id]) for job in queue_order(snapshot.pending)]


# --- properties --------------------------------------------------------------------------


def check_invariants(snapshot: Snapshot, decisions: Decisions) -> None:
    jobs = {j.id: j for j in snapshot.pending}
    order = [j.id for j in queue_order(snapshot.pending)]

    # Every pending job gets exactly one decision; admitted xor blocked.
    decided = [a.job_id for a in decisions.admitted] + [b.job_id for b in decisions.blocked]
    assert Counter(decided) == Counter(j.id for j in snapshot.pending)

    # Both lists are in queue order; positions count the blocked jobs from 1.
    rank = {job_id: i for i, job_id in enumerate(order)}
    assert [rank[a.job_id] for a in decisions.admitted] == sorted(
        rank[a.job_id] for a in decisions.admitted
    )
    assert [rank[b.job_id] for b in decisions.blocked] == sorted(
        rank[b.job_id] for b in decisions.blocked
    )
    assert [b.position for b in decisions.blocked] == list(range(1, len(decisions.blocked) + 1))
    assert all(b.reason for b in decisions.blocked)

    # Gangs are atomic and each task gets exactly its request.
    nodes = {s.node.name: s for s in snapshot.nodes}
    placed: dict[str, list[TaskPlacement]] = {name: [] for name in nodes}
    for admission in decisions.admitted:
        job = jobs[admission.job_id]
        assert [p.index for p in admission.placements] == list(range(job.tasks))
        for p in admission.placements:
            assert p.resources == job.per_task
            assert len(p.gpu_indices) == job.per_task.gpu
            assert job.pool is None or nodes[p.node].node.pool == job.pool
            placed[p.node].append(p)

    # Never over a node's capacity; GPUs exist, are not busy, and are not handed out twice.
    for name, ps in placed.items():
        s = nodes[name]
        total = s.allocated
        for p in ps:
            total = total + p.resources
        if ps:
            assert total.fits_in(s.node.capacity), (name, total)
        gpus = [i for p in ps for i in p.gpu_indices]
        assert len(gpus) == len(set(gpus))
        assert set(gpus) <= {g.index for g in s.node.gpus} - s.busy_gpus

    # Never over a tenant's quota (a resource nobody asked for may stay over, untouched).
    added: dict[str, Resources] = {}
    for admission in decisions.admitted:
        job = jobs[admission.job_id]
        added[job.tenant] = added.get(job.tenant, Resources()) + job.total
    for t in snapshot.tenants:
        extra = added.get(t.name, Resources())
        for name in ("cpu", "memory", "gpu"):
            limit = t.quota.limit_of(name)
            if limit is not None and extra.amount(name) > 0:
                assert t.usage.amount(name) + extra.amount(name) <= limit

    # Strict queue: nothing is admitted after the first capacity-blocked job.
    kinds = {b.job_id: b.kind for b in decisions.blocked}
    heads = [job_id for job_id in order if kinds.get(job_id) is BlockKind.CAPACITY]
    assert len(heads) <= 1
    if heads:
        assert all(rank[a.job_id] < rank[heads[0]] for a in decisions.admitted)
    assert all(rank[j] > rank[heads[0]] for j in order if kinds.get(j) is BlockKind.QUEUE)

    # NEVER exactly when never_runs_reason says so.
    quotas = {t.name: t.quota for t in snapshot.tenants}
    node_list = [s.node for s in snapshot.nodes]
    for job in snapshot.pending:
        reason = never_runs_reason(job, node_list, quotas.get(job.tenant, Quota()), job.tenant)
        assert (kinds.get(job.id) is BlockKind.NEVER) == (reason is not None)


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_invariants_hold(snapshot: Snapshot) -> None:
    check_invariants(snapshot, schedule(snapshot))


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_agrees_with_the_naive_oracle(snapshot: Snapshot) -> None:
    assert flatten(schedule(snapshot), snapshot) == naive_schedule(snapshot)


@settings(max_examples=200, deadline=None)
@given(snapshots(), st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_listing_order(
    snapshot: Snapshot, rnd: random.Random
) -> None:
    decisions = schedule(snapshot)
    assert schedule(snapshot) == decisions
    nodes, tenants, pending = list(snapshot.nodes), list(snapshot.tenants), list(snapshot.pending)
    rnd.shuffle(nodes)
    rnd.shuffle(tenants)
    rnd.shuffle(pending)
    again = Snapshot(tuple(nodes), tuple(tenants), tuple(pending))
    assert schedule(again) == decisions
