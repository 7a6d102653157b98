"""Invariants of schedule() with cohorts, running work, fair share, backfill and preemption.

The quota model below is written again from docs/scheduling.md, independently
of ``quota.py``: entries per tenant and pool, nominal / borrowing / lending
limits, and a cohort's shared pool of lendable quota.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from sched_builders import Gi

from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.domain.tenancy import ANY_POOL, PoolQuota, Quota
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler import schedule
from virtuai.scheduler.snapshot import (
    BlockKind,
    Decisions,
    NodeState,
    PendingJob,
    Policy,
    RunningJob,
    Snapshot,
    TenantState,
)

NAMES = ("physics", "chemistry", "biology", "maths")
R = ("cpu", "memory", "gpu")


def amounts(r: Resources) -> tuple[int, int, int]:
    return (r.cpu_milli, r.memory, r.gpu)


# --- strategies --------------------------------------------------------------------------


@st.composite
def nodes_(draw: st.DrawFn) -> list[Node]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        gpus = draw(st.sampled_from([0, 0, 2, 4]))
        pool = "gpu" if gpus else draw(st.sampled_from(["cpu", "cpu", "gpu"]))
        devices = tuple(GpuDevice(g, "A100", 80 * Gi) for g in range(gpus))
        capacity = Resources(draw(st.integers(1, 12)) * 1000, draw(st.integers(1, 24)) * Gi, gpus)
        out.append(Node(f"n{i}", pool, "local", capacity, devices))
    return out


def limit(scale: int, top: int) -> st.SearchStrategy[int | None]:
    amount = st.integers(0, top).map(lambda n: n * scale)
    return st.one_of(st.none(), amount, amount)


def quotas(top: int) -> st.SearchStrategy[Quota]:
    return st.builds(Quota, limit(1000, top), limit(Gi, 2 * top), limit(1, top // 2))


@st.composite
def tenants_(draw: st.DrawFn) -> list[TenantState]:
    out = []
    for name in NAMES[: draw(st.integers(1, 4))]:
        entries = [PoolQuota(ANY_POOL, draw(quotas(12)), draw(quotas(6)), draw(quotas(8)))]
        if draw(st.booleans()):
            entries.append(PoolQuota("gpu", draw(quotas(8)), draw(quotas(4)), draw(quotas(4))))
        out.append(
            TenantState(
                name,
                Quota(),
                quotas=tuple(entries),
                cohort=draw(st.sampled_from([None, "c1", "c1", "c2"])),
                weight=draw(st.sampled_from([0.5, 1.0, 2.0])),
            )
        )
    return out


@st.composite
def job_(draw: st.DrawFn, id: str, tenants: list[str], submitted: float = 0.0) -> PendingJob:
    return PendingJob(
        id=id,
        tenant=draw(st.sampled_from(tenants)),
        priority=draw(st.sampled_from([100, 500, 500, 1000])),
        submitted_at=submitted + draw(st.integers(0, 3)),
        seq=draw(st.integers(0, 40)),
        per_task=Resources(
            draw(st.integers(0, 6)) * 500,
            draw(st.integers(0, 8)) * Gi // 2,
            draw(st.sampled_from([0, 0, 0, 1, 2])),
        ),
        tasks=draw(st.sampled_from([1, 1, 1, 2, 3])),
        pool=draw(st.sampled_from([None, None, "cpu", "gpu"])),
        walltime_s=draw(st.sampled_from([None, 10, 100, 1000])),
        preemptible=draw(st.sampled_from([True, True, True, False])),
    )


def states(nodes: list[Node], running: list[RunningJob]) -> tuple[NodeState, ...]:
    out = []
    for n in nodes:
        held, busy = Resources(), set[int]()
        for r in running:
            for p in r.placements:
                if p.node == n.name:
                    held = held + p.resources
                    busy.update(p.gpu_indices)
        out.append(NodeState(n, held, frozenset(busy)))
    return tuple(out)


@st.composite
def worlds(draw: st.DrawFn, policy: Policy | None = None) -> Snapshot:
    nodes = draw(nodes_())
    tenants = draw(tenants_())
    names = [t.name for t in tenants]
    runners, waiters = names, names
    if len(names) > 1 and draw(st.booleans()):
        # Crowded: one cohort; some tenants run work (borrowing), the others submit.
        tenants = [replace(t, cohort="c1") for t in tenants]
        cut = draw(st.integers(1, len(names) - 1))
        runners, waiters = names[:cut], names[cut:]
    # Running work, placed by the scheduler itself on the empty cluster (no quotas).
    seeds = [draw(job_(f"r{i}", runners)) for i in range(draw(st.integers(0, 14)))]
    placed = schedule(Snapshot(states(nodes, []), (), tuple(seeds)))
    pending_ids = [f"p{i}" for i in range(draw(st.integers(0, 14)))]
    by_id = {j.id: j for j in seeds}
    running = []
    for a in placed.admitted:
        j = by_id[a.job_id]
        started = float(draw(st.integers(0, 50)))
        preempting = draw(st.sampled_from([False, False, False, True]))
        running.append(
            RunningJob(
                j.id,
                j.tenant,
                j.priority,
                a.placements,
                started_at=started,
                expected_end=None if j.walltime_s is None else started + j.walltime_s,
                preemptible=j.preemptible,
                preempting=preempting,
                preempted_for=draw(st.sampled_from([None, *pending_ids[:2]]))
                if preempting
                else None,
            )
        )
    pending = [draw(job_(i, waiters, 40.0)) for i in pending_ids]
    if policy is None:
        policy = draw(
            st.one_of(
                st.just(Policy.fair()),
                st.builds(Policy, st.booleans(), st.booleans(), st.booleans(), st.booleans()),
            )
        )
    return Snapshot(
        states(nodes, running), tuple(tenants), tuple(pending), tuple(running), 50.0, policy
    )


# --- an independent quota model ----------------------------------------------------------


def entries_of(t: TenantState) -> dict[str, PoolQuota]:
    out = {q.pool: q for q in t.quotas}
    out.setdefault(ANY_POOL, PoolQuota(ANY_POOL, t.quota))
    return out


def charges(placements: tuple[TaskPlacement, ...], pool_of: dict[str, str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for p in placements:
        for key in (ANY_POOL, pool_of[p.node]):
            sums = out.setdefault(key, [0, 0, 0])
            for r, a in enumerate(amounts(p.resources)):
                sums[r] += a
    return out


def usage(
    snapshot: Snapshot, extra: dict[str, list[tuple[TaskPlacement, ...]]], *, future: bool = False
) -> dict[tuple[str, str], list[int]]:
    pool_of = {s.node.name: s.node.pool for s in snapshot.nodes}
    out: dict[tuple[str, str], list[int]] = {}
    jobs = [(r.tenant, r.placements) for r in snapshot.running if not (future and r.preempting)]
    jobs += [(tenant, p) for tenant, ps in extra.items() for p in ps]
    for tenant, placements in jobs:
        for key, sums in charges(placements, pool_of).items():
            acc = out.setdefault((tenant, key), [0, 0, 0])
            for r in range(3):
                acc[r] += sums[r]
    return out


def lendable(q: PoolQuota, r: int) -> int:
    nominal = amounts_q(q.nominal)[r]
    lend = amounts_q(q.lending_limit)[r]
    assert nominal is not None
    return nominal if lend is None else min(lend, nominal)


def amounts_q(q: Quota) -> tuple[int | None, int | None, int | None]:
    return (q.cpu_milli, q.memory, q.gpu)


def check_quotas(snapshot: Snapshot, decisions: Decisions) -> None:
    """Where admissions added something, nominal/borrowing/lending limits hold."""
    jobs = {j.id: j for j in snapshot.pending}
    added: dict[str, list[tuple[TaskPlacement, ...]]] = {}
    for a in decisions.admitted:
        added.setdefault(jobs[a.job_id].tenant, []).append(a.placements)
    pool_of = {s.node.name: s.node.pool for s in snapshot.nodes}
    grew: set[tuple[str, str, int]] = set()  # (tenant, key, resource) that admissions grew
    for tenant, ps in added.items():
        for p in ps:
            for key, sums in charges(p, pool_of).items():
                grew.update((tenant, key, r) for r in range(3) if sums[r] > 0)
    final = usage(snapshot, added)
    before = usage(snapshot, {})
    borrowing = snapshot.policy.borrowing
    groups: dict[tuple[str, str, int], list[tuple[PoolQuota, int, int]]] = {}
    for t in snapshot.tenants:
        for key, q in entries_of(t).items():
            for r in range(3):
                nominal = amounts_q(q.nominal)[r]
                if nominal is None:
                    continue
                used = final.get((t.name, key), [0, 0, 0])[r]
                if t.cohort is not None and borrowing:
                    was = before.get((t.name, key), [0, 0, 0])[r]
                    groups.setdefault((t.cohort, key, r), []).append((q, was, used))
                if (t.name, key, r) not in grew:
                    continue
                if t.cohort is None or not borrowing:
                    assert used <= nominal, (t.name, key, R[r], used, nominal)
                    continue
                ceiling = amounts_q(q.borrowing_limit)[r]
                if ceiling is not None:
                    assert used <= nominal + ceiling, (t.name, key, R[r], used)
    for (cohort, key, r), members in groups.items():
        # What members hold beyond the part of their nominal quota they do not lend is drawn
        # from the cohort's pool of lendable quota; admissions may only draw within it.
        pool = sum(lendable(q, r) for q, _, _ in members)
        guaranteed = [(amounts_q(q.nominal)[r] or 0) - lendable(q, r) for q, _, _ in members]
        drawn = [
            (max(0, was - g), max(0, used - g))
            for (_, was, used), g in zip(members, guaranteed, strict=True)
        ]
        before_total, after_total = sum(d[0] for d in drawn), sum(d[1] for d in drawn)
        if after_total > before_total:
            assert after_total <= pool, (cohort, key, R[r], after_total, pool)


def check_common(snapshot: Snapshot, decisions: Decisions) -> None:
    """One decision per job, positions, gangs atomic, capacity and devices, preemptions."""
    jobs = {j.id: j for j in snapshot.pending}
    decided = [a.job_id for a in decisions.admitted] + [b.job_id for b in decisions.blocked]
    assert Counter(decided) == Counter(list(jobs))
    assert [b.position for b in decisions.blocked] == list(range(1, len(decisions.blocked) + 1))
    assert all(b.reason for b in decisions.blocked)
    nodes = {s.node.name: s for s in snapshot.nodes}
    placed: dict[str, list[TaskPlacement]] = {name: [] for name in nodes}
    for a in decisions.admitted:
        job = jobs[a.job_id]
        assert [p.index for p in a.placements] == list(range(job.tasks))
        for p in a.placements:
            assert p.resources == job.per_task and len(p.gpu_indices) == job.per_task.gpu
            assert job.pool is None or nodes[p.node].node.pool == job.pool
            placed[p.node].append(p)
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
    check_preemptions(snapshot, decisions)


def check_preemptions(snapshot: Snapshot, decisions: Decisions) -> None:
    """Victims: borrowers (reclaim) or lower-priority preemptible jobs of the same tenant."""
    if not snapshot.policy.preemption:
        assert decisions.preempted == ()
        return
    jobs = {j.id: j for j in snapshot.pending}
    running = {r.id: r for r in snapshot.running}
    kinds = {b.job_id: b.kind for b in decisions.blocked}
    tenants = {t.name: t for t in snapshot.tenants}
    future = usage(snapshot, {}, future=True)
    assert len({p.job_id for p in decisions.preempted}) == len(decisions.preempted)
    for p in decisions.preempted:
        victim, preemptor = running[p.job_id], jobs[p.preemptor_id]
        assert kinds[preemptor.id] is BlockKind.PREEMPTION  # never admitted in the same pass
        assert victim.preemptible and not victim.preempting
        if victim.tenant == preemptor.tenant:
            assert victim.priority < preemptor.priority
            continue
        mine, theirs = tenants.get(preemptor.tenant), tenants.get(victim.tenant)
        assert mine is not None and theirs is not None and snapshot.policy.borrowing
        assert mine.cohort is not None and mine.cohort == theirs.cohort
        above = False
        for key, q in entries_of(theirs).items():
            held = future.get((theirs.name, key), [0, 0, 0])
            for r, nominal in enumerate(amounts_q(q.nominal)):
                above = above or (nominal is not None and held[r] > nominal)
        assert above, f"{victim.id} of {victim.tenant} does not borrow"


# --- properties --------------------------------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(worlds())
def test_invariants_hold_under_every_policy(snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    check_common(snapshot, decisions)
    check_quotas(snapshot, decisions)


@settings(max_examples=120, deadline=None)
@given(worlds(), st.randoms(use_true_random=False))
def test_deterministic_under_any_listing_order(snapshot: Snapshot, rnd: random.Random) -> None:
    decisions = schedule(snapshot)
    assert schedule(snapshot) == decisions
    parts = [list(snapshot.nodes), list(snapshot.tenants), list(snapshot.pending)]
    running = list(snapshot.running)
    for part in (*parts, running):
        rnd.shuffle(part)
    again = replace(
        snapshot,
        nodes=tuple(parts[0]),
        tenants=tuple(parts[1]),
        pending=tuple(parts[2]),
        running=tuple(running),
    )
    assert schedule(again) == decisions


@settings(max_examples=120, deadline=None)
@given(worlds(Policy(backfill=True)))
def test_backfill_never_delays_the_reserved_job(snapshot: Snapshot) -> None:
    never_delays_the_reserved_job(snapshot)


@settings(max_examples=60, deadline=None)
@given(worlds(Policy(backfill=True, reserve_late=True)))
def test_backfill_reserving_late_nodes_never_delays_the_reserved_job(snapshot: Snapshot) -> None:
    never_delays_the_reserved_job(snapshot)


def never_delays_the_reserved_job(snapshot: Snapshot) -> None:
    """Run what this pass admitted (backfilled jobs included) and plan the head alone again."""
    decisions = schedule(snapshot)
    heads = [b for b in decisions.blocked if b.expected_start is not None]
    assert len(heads) <= 1
    if not heads:
        return
    head = next(j for j in snapshot.pending if j.id == heads[0].job_id)
    jobs = {j.id: j for j in snapshot.pending}
    started = [
        RunningJob(
            a.job_id,
            jobs[a.job_id].tenant,
            jobs[a.job_id].priority,
            a.placements,
            started_at=snapshot.now,
            expected_end=(
                None
                if jobs[a.job_id].walltime_s is None
                else snapshot.now + (jobs[a.job_id].walltime_s or 0)
            ),
        )
        for a in decisions.admitted
    ]
    running = [*snapshot.running, *started]
    nodes = [s.node for s in snapshot.nodes]
    later = replace(
        snapshot,
        nodes=states(nodes, running),
        running=tuple(running),
        pending=(head,),
        tenants=(),  # quotas are not what a reservation waits for
    )
    again = schedule(later)
    if again.admitted:
        return
    start = again.blocked[0].expected_start
    assert start is not None and start <= heads[0].expected_start  # type: ignore[operator]


@st.composite
def reclaims(draw: st.DrawFn, mixed: bool = False) -> tuple[Snapshot, PendingJob]:
    """Unit-sized jobs on identical nodes whose capacity is exactly the cohort's nominal total.

    Borrowers fill the cluster; the lender, holding nothing, asks for at most its
    nominal quota: whatever the shapes, preempting borrowers must make room.
    """
    unit = Resources(1000, Gi)
    per_node = draw(st.integers(1, 4))
    n_nodes = draw(st.integers(1, 4))
    total = per_node * n_nodes
    lender_share = draw(st.integers(1, total))
    borrowers = draw(st.integers(1, 3))
    rest = total - lender_share
    shares = [rest // borrowers + (1 if i < rest % borrowers else 0) for i in range(borrowers)]
    names = [f"b{i}" for i in range(borrowers)]
    tenants = [TenantState("lender", Quota(unit.cpu_milli * lender_share), cohort="c")]
    tenants += [
        TenantState(name, Quota(unit.cpu_milli * share), cohort="c")
        for name, share in zip(names, shares, strict=True)
    ]
    nodes = [
        Node(f"n{i}", "cpu", "local", Resources(per_node * 1000, per_node * Gi))
        for i in range(n_nodes)
    ]

    def shape() -> Resources:
        if not mixed:
            return unit
        return Resources(draw(st.integers(1, 3)) * 1000, draw(st.integers(1, 3)) * Gi)

    fill = [
        PendingJob(f"f{i}", draw(st.sampled_from(names)), 500, 0.0, i, shape())
        for i in range(total)
    ]
    placed = schedule(Snapshot(states(nodes, []), tuple(tenants), tuple(fill)))
    by_id = {j.id: j for j in fill}
    running = [
        RunningJob(
            a.job_id,
            by_id[a.job_id].tenant,
            draw(st.sampled_from([100, 500, 1000])),
            a.placements,
            started_at=float(draw(st.integers(0, 9))),
            expected_end=float(draw(st.integers(100, 900))),
        )
        for a in placed.admitted
    ]
    tasks = draw(st.integers(1, lender_share))
    others = [*names, "lender"] if mixed else names  # a lender's own job would go first
    who, priority = "lender", 100
    if mixed and draw(st.booleans()):  # a borrower's job, maybe preempting its own
        who, priority = draw(st.sampled_from(names)), draw(st.sampled_from([100, 500, 1000]))
    want = PendingJob("want", who, priority, 10.0, 99, shape() if tasks == 1 else unit, tasks)
    requeued = [
        PendingJob(f"q{i}", draw(st.sampled_from(others)), 1000, 0.0, i, shape())
        for i in range(draw(st.integers(0, 3 if not mixed else 6)))
    ]
    snapshot = Snapshot(
        states(nodes, running),
        tuple(tenants),
        (want, *requeued),
        tuple(running),
        10.0,
        Policy.fair(),
    )
    return snapshot, want


@settings(max_examples=150, deadline=None)
@given(reclaims(mixed=True))
def test_invariants_hold_when_lenders_reclaim(case: tuple[Snapshot, PendingJob]) -> None:
    snapshot, _ = case
    decisions = schedule(snapshot)
    check_common(snapshot, decisions)
    check_quotas(snapshot, decisions)


@settings(max_examples=150, deadline=None)
@given(reclaims())
def test_a_lender_gets_its_nominal_quota_back_within_one_grace_period(
    case: tuple[Snapshot, PendingJob],
) -> None:
    snapshot, want = case
    first = schedule(snapshot)
    if any(a.job_id == want.id for a in first.admitted):
        return
    assert first.preempted, "the lender waits but nothing was preempted for it"
    assert {p.preemptor_id for p in first.preempted} <= {want.id, *(j.id for j in snapshot.pending)}
    gone = {p.job_id for p in first.preempted}
    running = [r for r in snapshot.running if r.id not in gone]
    # The victims come back as pending jobs, with their old (possibly higher) priority.
    back = [
        PendingJob(r.id, r.tenant, r.priority, 0.0, 100 + i, r.placements[0].resources)
        for i, r in enumerate(snapshot.running)
        if r.id in gone
    ]
    nodes = [s.node for s in snapshot.nodes]
    # The control plane marks the preemptors: they go first, the freed room is theirs.
    preemptors = {p.preemptor_id for p in first.preempted}
    pending = tuple(replace(j, nominated=j.id in preemptors) for j in snapshot.pending)
    after = replace(
        snapshot,
        nodes=states(nodes, running),
        running=tuple(running),
        pending=(*pending, *back),
        now=snapshot.now + 30,
    )
    second = schedule(after)
    assert want.id in {a.job_id for a in second.admitted}, second
    check_common(after, second)


@settings(max_examples=100, deadline=None)
@given(worlds(Policy.fair()))
def test_no_preemption_without_a_waiting_job_that_needs_it(snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    blocked = {b.job_id for b in decisions.blocked if b.kind is BlockKind.PREEMPTION}
    assert {p.preemptor_id for p in decisions.preempted} <= blocked
    if not snapshot.pending:
        assert decisions == type(decisions)()
    # Nothing is preempted when every pending job fits without it.
    alone = schedule(replace(snapshot, policy=replace(snapshot.policy, preemption=False)))
    if not alone.blocked:
        assert decisions.preempted == ()


@settings(max_examples=100, deadline=None)
@given(worlds(Policy.fair()))
def test_victims_are_enough_and_each_one_is_needed(snapshot: Snapshot) -> None:
    check_victims_needed(snapshot)


@settings(max_examples=150, deadline=None)
@given(reclaims(mixed=True))
def test_victims_are_enough_and_each_one_is_needed_when_reclaiming(
    case: tuple[Snapshot, PendingJob],
) -> None:
    check_victims_needed(case[0])


def check_victims_needed(snapshot: Snapshot) -> None:
    """One waiting job: once its victims stop it starts, and with any one kept it does not."""
    running = tuple(r for r in snapshot.running if not r.preempting)
    nodes = [s.node for s in snapshot.nodes]
    snapshot = replace(
        snapshot, pending=snapshot.pending[:1], running=running, nodes=states(nodes, list(running))
    )
    decisions = schedule(snapshot)
    victims = {p.job_id for p in decisions.preempted}
    if not victims:
        return
    want = snapshot.pending[0].id

    def admitted_without(gone: set[str], policy: Policy) -> bool:
        left = [r for r in running if r.id not in gone]
        later = replace(snapshot, running=tuple(left), nodes=states(nodes, left), policy=policy)
        return want in {a.job_id for a in schedule(later).admitted}

    assert admitted_without(victims, snapshot.policy)
    no_preemption = replace(snapshot.policy, preemption=False)
    for kept in victims:
        assert not admitted_without(victims - {kept}, no_preemption), kept
