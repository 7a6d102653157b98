"""Backfill reservations beyond the head (``Policy.reserve_depth``: conservative backfill to
a depth): which jobs get one, and that nothing started in the pass breaks any of them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sched_builders import job, node, run, world
from test_sched_policy_properties import worlds

from virtuai.errors import InvalidRequest
from virtuai.scheduler import core, schedule
from virtuai.scheduler.backfill import Reservation
from virtuai.scheduler.snapshot import Blocked, BlockKind, Decisions, Policy, Snapshot
from virtuai.sim.policy import example_policy, parse_policy

LATE = Policy(backfill=True, reserve_late=True)


def admitted(d: Decisions) -> dict[str, list[str]]:
    return {a.job_id: [p.node for p in a.placements] for a in d.admitted}


def blocked(d: Decisions) -> dict[str, Blocked]:
    return {b.job_id: b for b in d.blocked}


# a: 4 of 8 cpu held until t=100; b and c: held whole until t=1000.
NODES = [node("a", cpu=8), node("b", cpu=8), node("c", cpu=8)]
RUNNING = [
    run("ra", "a", cpu=4, end=100.0),
    run("rb", "b", cpu=8, end=1000.0),
    run("rc", "c", cpu=8, end=1000.0),
]
JOBS = [
    job("gang", cpu=8, tasks=2, walltime=500, seq=1),  # the head: b and c at t=1000
    job("whole", cpu=8, walltime=200, seq=2),  # a whole node: a at t=100
    job("long", cpu=4, walltime=5000, seq=3),  # fits on a now, and would keep it
    job("short", cpu=4, walltime=50, seq=4),  # ends before anyone's reservation
]


def test_plain_easy_lets_a_long_job_take_the_node_the_second_blocked_job_waits_for() -> None:
    d = schedule(world(NODES, JOBS, [], RUNNING, policy=LATE))
    assert admitted(d) == {"long": ["a"]}  # "whole" now waits until t=5100
    assert blocked(d)["gang"].expected_start == 1000.0
    assert blocked(d)["whole"].expected_start is None


def test_a_second_reservation_keeps_that_node_and_short_jobs_still_pass() -> None:
    d = schedule(world(NODES, JOBS, [], RUNNING, policy=replace(LATE, reserve_depth=2)))
    assert admitted(d) == {"short": ["a"]}
    assert blocked(d)["gang"].expected_start == 1000.0
    whole = blocked(d)["whole"]
    assert (whole.kind, whole.expected_start) == (BlockKind.CAPACITY, 100.0)
    assert whole.reason.endswith("; expected to start in 00:01:40")
    long = blocked(d)["long"]
    assert long.kind is BlockKind.QUEUE
    assert long.reason.startswith("waiting for resources reserved for job whole")
    assert long.reason.endswith("with a time limit of at most 00:01:40 it could start now")


def test_the_depth_counts_reservations_and_the_next_one_is_made_around_the_earlier() -> None:
    """Two whole-node jobs behind the gang: the second cannot have a (t=100) as well, so
    with depth 3 it is reserved after the first ends there (t=300); with depth 2 it has
    no reservation at all."""
    jobs = [*JOBS[:2], job("whole2", cpu=8, walltime=200, seq=2), *JOBS[2:]]
    two = schedule(world(NODES, jobs, [], RUNNING, policy=replace(LATE, reserve_depth=2)))
    assert blocked(two)["whole2"].expected_start is None
    three = schedule(world(NODES, jobs, [], RUNNING, policy=replace(LATE, reserve_depth=3)))
    assert [blocked(three)[j].expected_start for j in ("gang", "whole", "whole2")] == [
        1000.0,
        100.0,
        300.0,
    ]


def test_a_gpu_index_promised_to_two_reservations_is_free_only_after_both() -> None:
    """The 4-GPU gang holds the node's GPUs 0-3 from t=100 to t=200; two 1-GPU jobs
    without a time limit are reserved from t=200 on: on two indices, not both on 0
    (the gang's end must not free an index the first of them was promised too)."""
    gpu_node = node("g", cpu=8, gpus=4)
    running = [run("r", [("g", (0,))], gpu=1, end=100.0)]
    jobs = [
        job("gang", gpu=4, walltime=100, seq=1),
        job("one", gpu=1, seq=2),
        job("two", gpu=1, seq=3),
    ]
    d, reservations = reservations_of(
        world([gpu_node], jobs, [], running, policy=replace(LATE, reserve_depth=3))
    )
    assert [blocked(d)[j].expected_start for j in ("gang", "one", "two")] == [100.0, 200.0, 200.0]
    indices = {r.job_id: r.placements[0].gpu_indices for r in reservations if r.job_id != "gang"}
    assert len(indices) == 2 and set(indices["one"]) != set(indices["two"])


def test_the_policy_file_names_the_depth() -> None:
    assert parse_policy("backfill: easy\nreservations: 3\n").scheduler_policy().reserve_depth == 3
    assert example_policy("las-fairshare").scheduler_policy().reserve_depth >= 1
    with pytest.raises(InvalidRequest) as bad:
        parse_policy("reservations: 0\n")
    assert "reservations" in str(bad.value)


# --- the plan a pass leaves is feasible ---------------------------------------------------


def reservations_of(snapshot: Snapshot) -> tuple[Decisions, list[Reservation]]:
    one = core._Pass(snapshot)
    decisions = one.run()
    one.cluster.done()
    if one.running_ends is not None:
        one.running_ends.done()
    return decisions, one.reservations


def check_plan(snapshot: Snapshot) -> None:
    """At each reservation's start, on each of its nodes, what still runs then (running
    jobs, jobs this pass admitted, the other reservations started and not ended) leaves
    room for its share, and no GPU index is promised twice: no backfilled job delays any
    reserved job, and no two reservations need the same room at once."""
    decisions, reservations = reservations_of(snapshot)
    expected = {b.job_id: b.expected_start for b in decisions.blocked if b.expected_start}
    assert {r.job_id: r.start for r in reservations} == expected
    assert len(reservations) <= snapshot.policy.reserve_depth
    now = snapshot.now
    walltime = {j.id: j.walltime_s for j in snapshot.pending}
    capacity = {s.node.name: s.node.capacity for s in snapshot.nodes}
    # Everything that holds room from now on: (end, placements).
    holders = [
        (
            None if r.expected_end is None or r.preempting else r.expected_end,
            r.placements,
        )
        for r in snapshot.running
    ]
    for a in decisions.admitted:
        w = walltime[a.job_id]
        holders.append((None if w is None else now + w, a.placements))
    for res in reservations:
        assert res.start >= now
        t = res.start
        used: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        gpus: dict[str, set[int]] = defaultdict(set)
        active = [placed for end, placed in holders if end is None or end > t]
        active += [
            other.placements
            for other in reservations
            if other is not res and other.start <= t < other.end
        ]
        for placed in [*active, res.placements]:
            for p in placed:
                u = used[p.node]
                u[0] += p.resources.cpu_milli
                u[1] += p.resources.memory
                u[2] += p.resources.gpu
                assert not gpus[p.node] & set(p.gpu_indices), (res.job_id, p.node)
                gpus[p.node].update(p.gpu_indices)
        for name in {p.node for p in res.placements}:
            cap, u = capacity[name], used[name]
            assert u[0] <= cap.cpu_milli and u[1] <= cap.memory and u[2] <= cap.gpu, (
                res.job_id,
                name,
            )


@settings(max_examples=50, deadline=None)
@given(
    worlds(Policy(backfill=True)),
    st.integers(1, 4),
    st.booleans(),
)
def test_no_backfilled_job_delays_any_reserved_job(
    snapshot: Snapshot, depth: int, late: bool
) -> None:
    policy = Policy(backfill=True, reserve_depth=depth, reserve_late=late)
    check_plan(replace(snapshot, policy=policy))


@settings(max_examples=30, deadline=None)
@given(worlds(Policy(backfill=True)), st.integers(2, 4))
def test_more_reservations_never_move_the_heads(snapshot: Snapshot, depth: int) -> None:
    """The head's reservation is made first, before any later one: the same at any depth."""
    one = schedule(snapshot)
    more = schedule(replace(snapshot, policy=replace(snapshot.policy, reserve_depth=depth)))
    first = [b for b in one.blocked if b.expected_start is not None]
    again = [b for b in more.blocked if b.expected_start is not None]
    assert first[:1] == again[:1]
