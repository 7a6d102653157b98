"""Gangs as LAS victims (``Policy.gang_victim_ratio``, #12 round 9): a gang on several
nodes of a tenant far above its fair share may be preempted for a smaller job, and the
room it frees beyond that job goes to the next blocked jobs of the pass."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from sched_builders import job, node, res, state
from test_sched_policy_properties import worlds

from virtuai.domain.tenancy import Quota
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler import schedule
from virtuai.scheduler.core import share_tracker
from virtuai.scheduler.snapshot import (
    BlockKind,
    Decisions,
    NodeState,
    Policy,
    RunningJob,
    Snapshot,
    TenantState,
)
from virtuai.sim.policy import example_policy

HOUR = 3600.0
NOW = 10 * HOUR
LAS = replace(Policy.las(), min_run_s=600, las_thresholds_gpu_s=(3600.0, 16 * 3600.0))


def _placed(node_gpus: dict[str, int]) -> tuple[TaskPlacement, ...]:
    return tuple(
        TaskPlacement(i, name, res(1, "1Gi", gpus), tuple(range(gpus)))
        for i, (name, gpus) in enumerate(sorted(node_gpus.items()))
    )


def _world(
    running: list[RunningJob], pending: list, bound: float, tenants: str = "abcd"
) -> Snapshot:
    """Two nodes of 2 GPUs; tenants of equal weight; ``running`` placed as given."""
    states = []
    for name in ("n0", "n1"):
        mine = [p for r in running for p in r.placements if p.node == name]
        busy = [g for p in mine for g in p.gpu_indices]
        states.append(
            state(node(name, cpu=8, memory="64Gi", gpus=2), len(mine), f"{len(mine)}Gi", busy)
        )
    return Snapshot(
        tuple(states),
        tuple(TenantState(t, Quota()) for t in tenants),
        tuple(pending),
        tuple(running),
        now=NOW,
        policy=replace(LAS, gang_victim_ratio=bound),
    )


def _gang(tenant: str = "b") -> RunningJob:
    # 4 GPUs on two nodes for 8 h: 32 GPU-hours, the top level.
    return RunningJob("gang", tenant, 500, _placed({"n0": 2, "n1": 2}), started_at=2 * HOUR)


def _small(id: str, tenant: str = "a") -> object:
    return job(id, tenant=tenant, gpu=1, submitted_at=NOW - 700)


def _ratio(snapshot: Snapshot, tenant: str) -> float:
    return share_tracker(snapshot).ratio(tenant)


def test_a_gang_above_the_bound_is_preempted_for_a_smaller_job() -> None:
    probe = _world([_gang()], [_small("small")], 1.0)
    ratio = _ratio(probe, "b")
    assert ratio > 1.0  # b holds the whole cluster with a quarter of the shares
    decisions = schedule(_world([_gang()], [_small("small")], ratio - 0.01))
    assert [(p.job_id, p.preemptor_id) for p in decisions.preempted] == [("gang", "small")]


def test_not_at_or_below_the_bound_nor_when_off() -> None:
    ratio = _ratio(_world([_gang()], [_small("small")], 1.0), "b")
    for bound in (ratio + 0.01, 0.0):
        assert schedule(_world([_gang()], [_small("small")], bound)).preempted == ()


def test_a_bigger_job_on_one_node_is_never_a_gang_victim() -> None:
    # b's two 2-GPU jobs, one per node: bigger than the 1-GPU job, but neither a gang.
    one = RunningJob("one", "b", 500, _placed({"n0": 2}), started_at=2 * HOUR)
    two = RunningJob("two", "b", 500, _placed({"n1": 2}), started_at=2 * HOUR)
    assert schedule(_world([one, two], [_small("small")], 1e-9)).preempted == ()


def test_the_room_beyond_the_preemptor_goes_to_the_next_blocked_jobs() -> None:
    # One gang stopped frees 4 GPUs: the first 1-GPU job preempts it, the next three wait
    # for the same room (spare), and no fifth job or second victim is needed for them.
    pending = [_small(f"s{i}", "acd"[i % 3]) for i in range(5)]
    decisions = schedule(_world([_gang()], pending, 1e-9))
    assert [(p.job_id, p.preemptor_id) for p in decisions.preempted] == [("gang", "s0")]
    waiting = [b.job_id for b in decisions.blocked if b.kind is BlockKind.PREEMPTION]
    assert waiting == ["s0", "s1", "s2", "s3"]


def test_the_victim_still_needs_a_higher_level_and_its_minimum_run() -> None:
    # Run 5 minutes only (under min_run_s), or a gang with little service: kept.
    young = replace(_gang(), started_at=NOW - 300)
    assert schedule(_world([young], [_small("small")], 1e-9)).preempted == ()
    fresh = replace(_gang(), started_at=NOW - 660)  # 4 GPUs x 11 min < 1 GPU-hour: level 0
    assert schedule(_world([fresh], [_small("small")], 1e-9)).preempted == ()


def test_las_fairshare_and_the_live_policy_turn_it_on() -> None:
    assert Policy.las().gang_victim_ratio == 2.0
    assert example_policy("las-fairshare").scheduler_policy().gang_victim_ratio == 2.0
    assert Policy.fair().gang_victim_ratio == 0.0


# --- invariants ---------------------------------------------------------------------------

RANDOM_LAS = replace(
    Policy.las(),
    min_run_s=0.0,
    las_thresholds_gpu_s=(10.0, 100.0),
    las_patience_s=0.0,
    starvation_factor=0.0,
    starvation_min_s=0.0,
)


def check_gang_victims(snapshot: Snapshot, decisions: Decisions) -> None:
    """A victim with more GPUs than its preemptor (same priority) is a gang on several nodes
    of a tenant whose fair-share ratio exceeds the bound, even counting everything the pass
    admitted or promised (ratios only grow within a pass, so this bounds the one seen)."""
    bound = snapshot.policy.gang_victim_ratio
    tracker = share_tracker(snapshot)
    pending = {j.id: j for j in snapshot.pending}
    for a in decisions.admitted:
        tracker.add(pending[a.job_id].tenant, pending[a.job_id].total)
    for b in decisions.blocked:
        if b.kind is BlockKind.PREEMPTION:
            tracker.add(pending[b.job_id].tenant, pending[b.job_id].total)
    running = {r.id: r for r in snapshot.running}
    for p in decisions.preempted:
        victim, preemptor = running[p.job_id], pending[p.preemptor_id]
        if victim.priority != preemptor.priority or victim.total.gpu <= preemptor.total.gpu:
            continue
        assert bound > 0, (victim, preemptor)
        assert len({q.node for q in victim.placements}) >= 2, victim
        assert tracker.ratio(victim.tenant) > bound, (victim.tenant, bound)


@st.composite
def gang_worlds(draw: st.DrawFn) -> Snapshot:
    """GPU nodes busy with gangs and single-node jobs of several tenants, and small jobs
    waiting: the case the bound is for (``worlds()`` seldom has a gang to preempt)."""
    gpus = draw(st.sampled_from([2, 4]))
    nodes = [
        node(f"n{i}", cpu=16, memory="64Gi", gpus=gpus) for i in range(draw(st.integers(2, 4)))
    ]
    names = "abcd"[: draw(st.integers(2, 4))]
    tenants = tuple(
        TenantState(t, Quota(), weight=draw(st.sampled_from([0.5, 1.0, 2.0]))) for t in names
    )
    seeds = [
        job(
            f"r{i}",
            tenant=draw(st.sampled_from(names)),
            gpu=draw(st.integers(1, gpus)),
            tasks=draw(st.sampled_from([1, 2, 2, 3])),
            priority=draw(st.sampled_from([500, 500, 1000])),
        )
        for i in range(draw(st.integers(1, 8)))
    ]
    empty = tuple(state(n) for n in nodes)
    placed = schedule(Snapshot(empty, tenants, tuple(seeds)))
    by_id = {j.id: j for j in seeds}
    running = [
        RunningJob(
            a.job_id,
            by_id[a.job_id].tenant,
            by_id[a.job_id].priority,
            a.placements,
            started_at=float(draw(st.integers(0, 150))),
            preemptible=draw(st.sampled_from([True, True, False])),
        )
        for a in placed.admitted
    ]
    pending = [
        job(
            f"p{i}",
            tenant=draw(st.sampled_from(names)),
            gpu=draw(st.integers(1, gpus)),
            tasks=draw(st.sampled_from([1, 1, 2])),
            priority=draw(st.sampled_from([500, 500, 1000])),
            submitted_at=float(draw(st.integers(0, 100))),
        )
        for i in range(draw(st.integers(1, 8)))
    ]
    states = []
    for n in nodes:
        mine = [p for r in running for p in r.placements if p.node == n.name]
        held = sum((p.resources for p in mine), res())
        busy = frozenset(g for p in mine for g in p.gpu_indices)
        states.append(NodeState(n, held, busy))
    bound = draw(st.sampled_from([0.0, 1e-9, 0.5, 1.0, 2.0]))
    policy = replace(RANDOM_LAS, gang_victim_ratio=bound)
    return Snapshot(tuple(states), tenants, tuple(pending), tuple(running), 200.0, policy)


@settings(max_examples=200, deadline=None)
@given(gang_worlds())
def test_only_gangs_above_the_bound_are_bigger_victims(snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    check_gang_victims(snapshot, decisions)
    # Each job is decided once, and a victim is preempted for one job only.
    ids = [a.job_id for a in decisions.admitted] + [b.job_id for b in decisions.blocked]
    assert sorted(ids) == sorted(j.id for j in snapshot.pending)
    assert len({p.job_id for p in decisions.preempted}) == len(decisions.preempted)


@settings(max_examples=100, deadline=None)
@given(worlds(), st.sampled_from([0.0, 1e-9, 2.0]))
def test_invariants_hold_with_gang_victims_in_any_world(snapshot: Snapshot, bound: float) -> None:
    snapshot = replace(snapshot, policy=replace(RANDOM_LAS, gang_victim_ratio=bound))
    check_gang_victims(snapshot, schedule(snapshot))
