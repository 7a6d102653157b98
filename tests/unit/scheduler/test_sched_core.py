"""Examples of each scheduling rule: order, quota, gangs, best fit, devices, queue, never."""

from __future__ import annotations

import random

from sched_builders import job, node, res, snap, state, tenant

from virtuai.domain.resources import Node
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler import queue_order, schedule
from virtuai.scheduler.snapshot import Admission, Blocked, BlockKind, Decisions, NodeState, Snapshot


def admitted_ids(decisions: Decisions) -> list[str]:
    return [a.job_id for a in decisions.admitted]


def blocked_by_id(decisions: Decisions) -> dict[str, Blocked]:
    return {b.job_id: b for b in decisions.blocked}


def placement_of(decisions: Decisions, job_id: str) -> tuple[TaskPlacement, ...]:
    return next(a.placements for a in decisions.admitted if a.job_id == job_id)


# --- order -------------------------------------------------------------------------------


def test_higher_priority_goes_first_even_if_submitted_later() -> None:
    d = schedule(
        snap(
            [node("n1", cpu=4)],
            [
                job("early-low", cpu=4, priority=100, submitted_at=1.0),
                job("late-high", cpu=4, priority=1000, submitted_at=9.0),
            ],
        )
    )
    assert admitted_ids(d) == ["late-high"]
    assert blocked_by_id(d)["early-low"].kind is BlockKind.CAPACITY


def test_same_priority_earlier_submission_then_seq_wins() -> None:
    jobs = [
        job("b", submitted_at=2.0, seq=1),
        job("a2", submitted_at=1.0, seq=3),
        job("a1", submitted_at=1.0, seq=2),
    ]
    assert [j.id for j in queue_order(jobs)] == ["a1", "a2", "b"]
    d = schedule(snap([node("n1", cpu=2)], jobs))
    assert admitted_ids(d) == ["a1", "a2"]
    assert blocked_by_id(d)["b"].kind is BlockKind.CAPACITY


def test_queue_order_does_not_depend_on_input_order() -> None:
    jobs = [job(f"j{i}", priority=p, submitted_at=t) for i, (p, t) in enumerate([(1, 0)] * 3)]
    jobs += [job("same-key-z", seq=7), job("same-key-a", seq=7)]
    expected = queue_order(jobs)
    for seed in range(5):
        shuffled = jobs[:]
        random.Random(seed).shuffle(shuffled)
        assert queue_order(shuffled) == expected


# --- quota -------------------------------------------------------------------------------


def test_quota_reason_counts_jobs_admitted_in_the_same_pass() -> None:
    d = schedule(
        snap(
            [node("n1", cpu=32)],
            [job("first", cpu=2, seq=1), job("second", cpu=1, seq=2)],
            [tenant("physics", cpu=8, usage=res(cpu=6))],
        )
    )
    assert admitted_ids(d) == ["first"]
    assert blocked_by_id(d)["second"] == Blocked(
        "second", BlockKind.QUOTA, "waiting for quota: tenant physics uses 8 of 8 cpu", 1
    )


def test_quota_names_the_first_exceeded_resource_in_memory_units() -> None:
    d = schedule(
        snap(
            [node("n1", cpu=32, memory="256Gi", gpus=4)],
            [job("j", cpu=4, memory="4Gi", gpu=1)],
            [tenant("physics", cpu=100, memory="32Gi", gpu=1, usage=res(0, "30Gi", 1))],
        )
    )
    assert (
        blocked_by_id(d)["j"].reason == "waiting for quota: tenant physics uses 30Gi of 32Gi memory"
    )


def test_quota_blocked_job_does_not_block_other_tenants() -> None:
    d = schedule(
        snap(
            [node("n1", cpu=8)],
            [
                job("p", tenant="physics", cpu=4, priority=1000),
                job("c", tenant="chemistry", cpu=4, priority=100),
            ],
            [tenant("physics", cpu=4, usage=res(cpu=2)), tenant("chemistry")],
        )
    )
    assert admitted_ids(d) == ["c"]
    assert blocked_by_id(d)["p"].kind is BlockKind.QUOTA


def test_quota_only_counts_resources_the_job_asks_for() -> None:
    # Over its GPU quota (e.g. lowered by an admin), the tenant may still run CPU work.
    d = schedule(
        snap([node("n1")], [job("cpu-only", cpu=1)], [tenant("physics", gpu=1, usage=res(gpu=2))])
    )
    assert admitted_ids(d) == ["cpu-only"]


def test_tenant_missing_from_snapshot_has_no_quota() -> None:
    assert admitted_ids(schedule(snap([node("n1")], [job("j", tenant="ghost")]))) == ["j"]


# --- gangs and placement -----------------------------------------------------------------


def test_gang_is_placed_all_or_nothing() -> None:
    nodes: list[Node | NodeState] = [state(node("a", gpus=2), busy=[0]), node("b", gpus=1)]
    d = schedule(snap(nodes, [job("big", gpu=1, tasks=3), job("small", gpu=1, tasks=2)]))
    # "big" would fit idle nodes but not now: none of its tasks is placed, and it blocks "small".
    assert admitted_ids(d) == []
    assert blocked_by_id(d)["big"].kind is BlockKind.CAPACITY
    assert blocked_by_id(d)["small"].kind is BlockKind.QUEUE

    d = schedule(snap(nodes, [job("pair", gpu=1, tasks=2), job("solo", cpu=1)]))
    assert sorted(p.node for p in placement_of(d, "pair")) == ["a", "b"]


def test_gang_tasks_may_share_a_node() -> None:
    d = schedule(snap([node("a", cpu=8), node("b", cpu=1)], [job("g", cpu=2, tasks=4)]))
    placements = placement_of(d, "g")
    assert [p.index for p in placements] == [0, 1, 2, 3]
    assert {p.node for p in placements} == {"a"}
    assert all(p.resources == res(cpu=2, memory="1Gi") for p in placements)


def test_best_fit_picks_the_node_left_with_fewest_free_gpus() -> None:
    nodes: list[Node | NodeState] = [
        node("roomy", gpus=8),
        state(node("tight", gpus=4), busy=[0, 1]),
    ]
    d = schedule(snap(nodes, [job("j", gpu=2)]))
    assert placement_of(d, "j") == (TaskPlacement(0, "tight", res(1, "1Gi", 2), (2, 3)),)


def test_cpu_work_prefers_nodes_without_free_gpus() -> None:
    nodes = [node("gpu-node", cpu=8, gpus=2), node("cpu-node", cpu=64)]
    d = schedule(snap(nodes, [job("j", cpu=4)]))
    assert placement_of(d, "j")[0].node == "cpu-node"


def test_best_fit_then_least_cpu_then_least_memory_then_name() -> None:
    nodes = [
        node("d-more-cpu", cpu=16, memory="8Gi"),
        node("c-more-mem", cpu=8, memory="16Gi"),
        node("b-tight", cpu=8, memory="8Gi"),
        node("a-tight", cpu=8, memory="8Gi"),
    ]
    d = schedule(snap(nodes, [job("j", cpu=2, memory="2Gi")]))
    assert placement_of(d, "j")[0].node == "a-tight"


def test_gpu_indices_are_the_lowest_free_and_never_busy_or_shared() -> None:
    busy_node = state(node("n", cpu=64, memory="512Gi", gpus=8), cpu=2, busy=[0, 2, 5])
    d = schedule(snap([busy_node], [job("x", gpu=2), job("y", gpu=1), job("z", gpu=2, tasks=1)]))
    assert placement_of(d, "x")[0].gpu_indices == (1, 3)
    assert placement_of(d, "y")[0].gpu_indices == (4,)
    assert placement_of(d, "z")[0].gpu_indices == (6, 7)


def test_pool_restricts_where_a_job_may_run() -> None:
    nodes = [node("cpu1", cpu=64, pool="cpu"), node("gpu1", cpu=8, pool="gpu", gpus=1)]
    d = schedule(snap(nodes, [job("j", cpu=2, pool="gpu")]))
    assert placement_of(d, "j")[0].node == "gpu1"


# --- queue, capacity and never -----------------------------------------------------------


def test_capacity_blocked_head_blocks_later_jobs_but_not_quota_or_never_ones() -> None:
    d = schedule(
        snap(
            [state(node("n1", cpu=8, gpus=4), busy=[1, 2])],
            [
                job("fits", cpu=2, priority=1000, seq=1),
                job("head", cpu=2, gpu=2, tasks=2, priority=900, seq=2),
                job("quota", tenant="chemistry", cpu=1, seq=3),
                job("small", cpu=1, seq=4),
                job("never", cpu=1, gpu=8, seq=5),
            ],
            [tenant("chemistry", cpu=1, usage=res(cpu=1))],
        )
    )
    by_id = blocked_by_id(d)
    assert admitted_ids(d) == ["fits"]
    assert [(b.job_id, b.kind, b.position) for b in d.blocked] == [
        ("head", BlockKind.CAPACITY, 1),
        ("quota", BlockKind.QUOTA, 2),
        ("small", BlockKind.QUEUE, 3),
        ("never", BlockKind.NEVER, 4),
    ]
    assert by_id["head"].reason == (
        "waiting for resources: needs cpu=4 memory=2Gi gpu=4 in 2 tasks; "
        "free now: cpu=6 memory=31Gi gpu=2; short of gpu"
    )
    assert "head" in by_id["small"].reason
    assert by_id["small"].reason.startswith("waiting behind job head (priority 900)")
    assert by_id["never"].reason == (
        "can never run: asks for 8 gpu per task but the largest node has 4"
    )


def test_capacity_reason_explains_fragmentation() -> None:
    nodes: list[Node | NodeState] = [
        state(node("a", gpus=2), busy=[0]),
        state(node("b", gpus=2), busy=[1]),
    ]
    d = schedule(snap(nodes, [job("j", gpu=2)]))
    assert blocked_by_id(d)["j"].reason == (
        "waiting for resources: needs cpu=1 memory=1Gi gpu=2 in 1 task; "
        "free now: cpu=16 memory=64Gi gpu=2; but no single node has room for one task "
        "(needs 2 gpu, at most 1 free on one node)"
    )


def test_never_jobs_do_not_block_the_queue() -> None:
    d = schedule(
        snap(
            [node("n1", cpu=4)],
            [job("huge", cpu=16, priority=1000), job("ok", cpu=1, priority=1)],
        )
    )
    assert admitted_ids(d) == ["ok"]
    assert blocked_by_id(d)["huge"] == Blocked(
        "huge",
        BlockKind.NEVER,
        "can never run: asks for 16 cpu per task but the largest node has 4",
        1,
    )


def test_never_when_total_is_over_the_tenant_quota() -> None:
    d = schedule(snap([node("n1", cpu=64)], [job("j", cpu=4, tasks=4)], [tenant("physics", cpu=8)]))
    assert blocked_by_id(d)["j"].reason == (
        "can never run: needs 16 cpu in total but tenant physics has a quota of 8 cpu"
    )


def test_never_when_a_gang_cannot_be_packed_even_on_idle_nodes() -> None:
    d = schedule(snap([node("a", gpus=2), node("b", gpus=2)], [job("g", gpu=2, tasks=3)]))
    assert blocked_by_id(d)["g"].kind is BlockKind.NEVER


def test_never_for_an_unknown_pool() -> None:
    d = schedule(snap([node("n1")], [job("j", pool="fat")]))
    assert blocked_by_id(d)["j"].reason == "can never run: asks for pool fat but it has no nodes"


def test_empty_snapshot_gives_empty_decisions() -> None:
    assert schedule(snap([], [])) == Decisions()
    assert schedule(snap([node("n1")], [])) == Decisions()


def test_admissions_come_in_queue_order() -> None:
    jobs = [job(f"j{i}", priority=i) for i in range(5)]
    d = schedule(snap([node("n1", cpu=64)], jobs))
    assert admitted_ids(d) == ["j4", "j3", "j2", "j1", "j0"]
    assert all(isinstance(a, Admission) for a in d.admitted)


def test_a_kept_cluster_decides_as_a_new_one() -> None:
    """``Cluster.reuse``: a pass over the same node objects, some changed since, decides
    exactly what a pass on a freshly built cluster decides."""
    from dataclasses import replace

    from virtuai.scheduler.placement import Cluster

    states = tuple(state(node(f"n{i}", cpu=4, memory="8Gi")) for i in range(4))
    jobs = tuple(job(f"j{i}", cpu=3, memory="1Gi") for i in range(6))
    first = Snapshot(states, (), jobs)
    schedule(first)  # keeps its cluster, with 4 jobs placed, then put back
    changed = (replace(states[0], allocated=res(cpu=2)), *states[1:])
    second = Snapshot(changed, (), jobs)
    kept = schedule(second)
    Cluster._keeper.forget()  # the next pass builds a new cluster
    assert schedule(second) == kept
    assert len(kept.admitted) == 3


def test_a_kept_cluster_told_which_nodes_changed_decides_as_a_new_one() -> None:
    """``Snapshot.nodes_since`` (the simulator's): the kept cluster reloads the positions
    it names, and only those, and decides as a freshly built cluster does."""
    from dataclasses import replace

    from virtuai.scheduler.placement import Cluster

    states = tuple(state(node(f"n{i}", cpu=4, memory="8Gi")) for i in range(4))
    jobs = tuple(job(f"j{i}", cpu=3, memory="1Gi") for i in range(6))
    changed = (states[0], replace(states[1], allocated=res(cpu=2)), *states[2:])
    told = Snapshot(changed, (), jobs, nodes_since=(states, frozenset({1})))
    schedule(Snapshot(states, (), jobs))  # keeps its cluster, on ``states``
    kept = schedule(told)
    Cluster._keeper.forget()  # the next pass builds a new cluster
    assert schedule(replace(told, nodes_since=None)) == kept
    assert len(kept.admitted) == 3
    # The caller vouches for the positions: one left out is not looked at (n1 shows the
    # 4 cpu it had), which is what spares the comparison of every node.
    schedule(Snapshot(states, (), jobs))
    untold = schedule(replace(told, nodes_since=(states, frozenset())))
    assert len(untold.admitted) == 4
