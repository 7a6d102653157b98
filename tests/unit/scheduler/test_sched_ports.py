"""Fixed ports (``PendingJob.host_ports``, a service's ``port: N``) as a per-node resource:
at most one task of a node holds a port, whatever the policy; a job whose port is taken
everywhere waits with a reason naming the port, and holds back nobody."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from sched_builders import Gi
from test_sched_properties import snapshots

from virtuai.domain.resources import Node, Resources
from virtuai.domain.sites import is_site_pool
from virtuai.domain.tenancy import Quota
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler import schedule
from virtuai.scheduler.plan import never_reason
from virtuai.scheduler.snapshot import (
    BlockKind,
    NodeState,
    PendingJob,
    Policy,
    RunningJob,
    Snapshot,
    TenantState,
)

PORTS = (8000, 8001)
POLICIES = (
    Policy.fifo(),
    Policy.fair(),
    Policy(backfill=True),
    Policy.las(),
)


def _with_ports(snapshot: Snapshot, data: st.DataObject) -> Snapshot:
    """Some pending jobs ask for fixed ports; some nodes hold some already."""
    pending = tuple(
        replace(job, host_ports=data.draw(st.frozensets(st.sampled_from(PORTS))))
        for job in snapshot.pending
    )
    nodes = tuple(
        replace(s, ports=data.draw(st.frozensets(st.sampled_from(PORTS)))) for s in snapshot.nodes
    )
    return replace(snapshot, nodes=nodes, pending=pending)


def _holders(nodes: tuple[NodeState, ...], running: tuple[RunningJob, ...]) -> Counter[object]:
    held: Counter[object] = Counter()
    for s in nodes:
        held.update((s.node.name, p) for p in s.ports)
    for job in running:
        for placement in job.placements:
            held.update((placement.node, p) for p in placement.host_ports)
    return held


@settings(max_examples=150, deadline=None)
@given(snapshots(), st.data(), st.sampled_from(POLICIES))
def test_no_two_tasks_of_a_node_ever_hold_one_port(
    snapshot: Snapshot, data: st.DataObject, policy: Policy
) -> None:
    # Pass 1 on nodes that hold some ports (work outside the snapshot), then pass 2 with
    # pass 1's admissions running (preemptible: the fair policies may preempt them).
    first = replace(_with_ports(snapshot, data), policy=policy)
    decisions = schedule(first)
    by_id = {job.id: job for job in first.pending}
    running = tuple(
        RunningJob(
            id=a.job_id,
            tenant=by_id[a.job_id].tenant,
            priority=by_id[a.job_id].priority,
            placements=a.placements,
            started_at=-1e6,
            expected_end=1e6,
        )
        for a in decisions.admitted
    )
    for a in decisions.admitted:
        for placement in a.placements:
            assert placement.host_ports == tuple(sorted(by_id[a.job_id].host_ports))
    held = _holders(first.nodes, running)
    assert all(count == 1 for count in held.values()), held

    # Pass 2: the same nodes with what pass 1 placed (in the books of each node), new jobs
    # of higher priority that may preempt.  Preempted jobs still hold their ports until
    # they stop: nothing admitted in this pass may take them.
    allocated: dict[str, Resources] = {}
    taken: dict[str, set[int]] = {}
    for job in running:
        for p in job.placements:
            allocated[p.node] = allocated.get(p.node, Resources()) + p.resources
            taken.setdefault(p.node, set()).update(p.host_ports)
    nodes = tuple(
        replace(
            s,
            allocated=s.allocated + allocated.get(s.node.name, Resources()),
            ports=s.ports | taken.get(s.node.name, set()),
            busy_gpus=s.busy_gpus
            | {
                g
                for j in running
                for p in j.placements
                if p.node == s.node.name
                for g in p.gpu_indices
            },
        )
        for s in first.nodes
    )
    again = tuple(replace(job, id=f"again-{job.id}", priority=1000) for job in first.pending[:10])
    second = replace(first, nodes=nodes, pending=again, running=running)
    decisions = schedule(second)
    admitted = tuple(
        RunningJob(id=a.job_id, tenant="", priority=0, placements=a.placements)
        for a in decisions.admitted
    )
    held = _holders(first.nodes, running + admitted)
    assert all(count == 1 for count in held.values()), held


def _node(name: str) -> NodeState:
    return NodeState(Node(name, "default", "local", Resources(8000, 16 * Gi)))


def _job(job_id: str, port: int | None, priority: int = 500) -> PendingJob:
    return PendingJob(
        id=job_id,
        tenant="t",
        priority=priority,
        submitted_at=0.0,
        seq=int(job_id[1:]),
        per_task=Resources(1000, Gi),
        host_ports=frozenset(() if port is None else (port,)),
    )


def _snapshot(nodes: tuple[NodeState, ...], *jobs: PendingJob, policy: Policy) -> Snapshot:
    return Snapshot(nodes, (TenantState("t", Quota()),), tuple(jobs), policy=policy)


@given(st.sampled_from(POLICIES))
@settings(max_examples=8, deadline=None)
def test_replicas_of_one_port_spread_and_the_one_left_over_waits_naming_it(
    policy: Policy,
) -> None:
    nodes = (_node("a"), _node("b"))
    decisions = schedule(
        _snapshot(nodes, _job("j1", 8000), _job("j2", 8000), _job("j3", 8000), policy=policy)
    )
    placed = {a.job_id: a.placements[0].node for a in decisions.admitted}
    assert sorted(placed.values()) == ["a", "b"]
    (waiting,) = decisions.blocked
    assert waiting.job_id == "j3"
    assert waiting.kind is BlockKind.CAPACITY
    assert waiting.reason == "waiting for port 8000: it is taken on every node"


@given(st.sampled_from(POLICIES))
@settings(max_examples=8, deadline=None)
def test_a_job_waiting_for_its_port_holds_back_nobody(policy: Policy) -> None:
    held = replace(_node("a"), ports=frozenset({8000}))
    decisions = schedule(
        _snapshot((held,), _job("j1", 8000, priority=1000), _job("j2", None), policy=policy)
    )
    assert [a.job_id for a in decisions.admitted] == ["j2"]
    assert [(b.job_id, b.kind) for b in decisions.blocked] == [("j1", BlockKind.CAPACITY)]


def test_a_port_is_free_again_once_its_holder_is_gone_and_other_ports_do_not_clash() -> None:
    held = replace(_node("a"), ports=frozenset({8000}))
    decisions = schedule(
        _snapshot((held,), _job("j1", 8001), _job("j2", 8001), policy=Policy.fifo())
    )
    assert [a.job_id for a in decisions.admitted] == ["j1"]
    assert decisions.admitted[0].placements[0].host_ports == (8001,)
    assert decisions.blocked[0].reason == "waiting for port 8001: it is taken on every node"
    decisions = schedule(_snapshot((_node("a"),), _job("j1", 8000), policy=Policy.fifo()))
    assert [a.job_id for a in decisions.admitted] == ["j1"]


def test_where_the_port_is_free_but_room_is_short_the_reason_says_both() -> None:
    full = replace(_node("b"), allocated=Resources(8000, 16 * Gi))
    held = replace(_node("a"), ports=frozenset({8000}))
    decisions = schedule(_snapshot((held, full), _job("j1", 8000), policy=Policy.fifo()))
    (blocked,) = decisions.blocked
    assert blocked.reason.startswith("waiting for resources")
    assert blocked.reason.endswith("(port 8000 is free on 1 node)")


def test_a_higher_priority_job_preempts_the_holder_of_its_port() -> None:
    held = replace(_node("a"), allocated=Resources(1000, Gi), ports=frozenset({8000}))
    holder = RunningJob(
        id="r1",
        tenant="t",
        priority=100,
        placements=(TaskPlacement(0, "a", Resources(1000, Gi), (), (8000,)),),
        started_at=0.0,
        expected_end=1e9,
    )
    snapshot = replace(
        _snapshot((held,), _job("j1", 8000, priority=1000), policy=Policy.fair()),
        running=(holder,),
        now=10.0,
    )
    decisions = schedule(snapshot)
    assert [p.job_id for p in decisions.preempted] == ["r1"]
    assert decisions.admitted == ()


def test_a_victim_keeps_its_port_until_it_has_stopped() -> None:
    """j1 preempts r1 for its memory, not its port: while r1 stops, the port it holds is
    not free for j2, which asks for nothing else (CI's hypothesis found it taken)."""
    full = replace(_node("a"), allocated=Resources(0, 16 * Gi), ports=frozenset({8000}))
    holder = RunningJob(
        id="r1",
        tenant="t",
        priority=100,
        placements=(TaskPlacement(0, "a", Resources(0, 16 * Gi), (), (8000,)),),
        started_at=0.0,
        expected_end=1e9,
    )
    big = replace(_job("j1", None, priority=1000), per_task=Resources(0, 16 * Gi))
    port = replace(_job("j2", 8000, priority=1000), per_task=Resources(0, 0))
    snapshot = replace(
        _snapshot((full,), big, port, policy=Policy.fair()), running=(holder,), now=10.0
    )
    decisions = schedule(snapshot)
    assert [(p.job_id, p.preemptor_id) for p in decisions.preempted] == [("r1", "j1")]
    assert decisions.admitted == ()
    assert {b.job_id for b in decisions.blocked} == {"j1", "j2"}


def _nodes_taking_a_task(snapshot: Snapshot, job: PendingJob) -> int:
    """Nodes (of its pool, among those it may use) that could take one task when idle."""
    need = job.per_task
    return sum(
        1
        for s in snapshot.nodes
        if (s.node.pool == job.pool if job.pool is not None else not is_site_pool(s.node.pool))
        and (job.allowed_nodes is None or s.node.name in job.allowed_nodes)
        and need.cpu_milli <= s.node.capacity.cpu_milli
        and need.memory <= s.node.capacity.memory
        and need.gpu <= min(s.node.capacity.gpu, len(s.node.gpus))
    )


@settings(max_examples=80, deadline=None)
@given(snapshots(), st.data(), st.sampled_from(POLICIES))
def test_a_gang_holding_a_port_with_more_tasks_than_nodes_is_never_naming_the_port(
    snapshot: Snapshot, data: st.DataObject, policy: Policy
) -> None:
    snapshot = replace(_with_ports(snapshot, data), policy=policy)
    decisions = schedule(snapshot)
    admitted = {a.job_id for a in decisions.admitted}
    never = {b.job_id: b.reason for b in decisions.blocked if b.kind is BlockKind.NEVER}
    for job in snapshot.pending:
        if not job.host_ports:
            continue
        short = _nodes_taking_a_task(snapshot, job) < job.tasks
        if short:
            assert job.id not in admitted
            assert job.id in never, (job, decisions.blocked)
        if "holds port" in never.get(job.id, ""):
            assert short
            assert all(str(p) in never[job.id] for p in job.host_ports)
        # The submit-time check says the same as the scheduler.
        if job.id in never:
            assert never_reason(replace(snapshot, pending=()), job) == never[job.id]


def test_a_gang_on_a_port_needs_a_node_per_task_and_is_never_otherwise() -> None:
    nodes = (
        _node("a"),
        _node("b"),
        replace(_node("c"), node=Node("c", "default", "local", Resources(500, Gi))),
    )
    three = replace(_job("j1", 8000), tasks=3)
    decisions = schedule(_snapshot(nodes, three, policy=Policy.fifo()))
    (blocked,) = decisions.blocked
    assert blocked.kind is BlockKind.NEVER
    assert blocked.reason == (
        "can never run: holds port 8000 on its node, so each of its 3 tasks needs a node "
        "of its own, but only 2 nodes can take one of its tasks"
    )
    two = replace(_job("j2", 8000), tasks=2)
    decisions = schedule(_snapshot(nodes, two, policy=Policy.fifo()))
    assert sorted(p.node for p in decisions.admitted[0].placements) == ["a", "b"]
    # Without a port, three tasks share the two big nodes.
    decisions = schedule(
        _snapshot(nodes, replace(three, host_ports=frozenset()), policy=Policy.fifo())
    )
    assert [a.job_id for a in decisions.admitted] == ["j1"]
