"""EASY backfill: the head's reservation, who may pass it, and the FIFO switch."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sched_builders import job, node, run, world
from test_sched_policy_properties import worlds

from virtuai.domain.resources import Resources
from virtuai.domain.sites import site_pool
from virtuai.scheduler import core, schedule
from virtuai.scheduler.backfill import Board, reserve, shape_of, starts_by
from virtuai.scheduler.placement import Cluster
from virtuai.scheduler.snapshot import Blocked, BlockKind, Decisions, NodeState, Policy, Snapshot

BACKFILL = Policy(backfill=True)
FIFO = Policy()


def admitted(d: Decisions) -> dict[str, list[str]]:
    return {a.job_id: [p.node for p in a.placements] for a in d.admitted}


def blocked(d: Decisions) -> dict[str, Blocked]:
    return {b.job_id: b for b in d.blocked}


# n1: 8 cpu, 4 held until t=100 and 2 until t=1000, so 2 free now and 6 from t=100.
RUNNING = [run("r1", "n1", cpu=4, end=100.0), run("r2", "n1", cpu=2, end=1000.0)]
HEAD = job("head", cpu=6, walltime=500, seq=1)


def test_the_head_gets_a_reservation_and_short_jobs_pass_it() -> None:
    jobs = [HEAD, job("long", cpu=2, walltime=500, seq=2), job("short", cpu=2, walltime=50, seq=3)]
    d = schedule(world([node("n1", cpu=8)], jobs, [], RUNNING, policy=BACKFILL))
    head = blocked(d)["head"]
    assert head.kind is BlockKind.CAPACITY
    assert head.expected_start == 100.0
    assert head.reason.endswith("; expected to start in 00:01:40")
    assert admitted(d) == {"short": ["n1"]}
    assert blocked(d)["long"] == Blocked(
        "long",
        BlockKind.QUEUE,
        "waiting for resources reserved for job head (priority 500), expected to start in "
        "00:01:40; with a time limit of at most 00:01:40 it could start now",
        2,
    )


def test_long_jobs_may_use_resources_the_reservation_does_not_need() -> None:
    jobs = [HEAD, job("long", cpu=2, walltime=500, seq=2)]
    d = schedule(world([node("n1", cpu=8), node("n2", cpu=4)], jobs, [], RUNNING, policy=BACKFILL))
    assert admitted(d) == {"long": ["n2"]}  # best fit would have been n1


def test_strict_fifo_keeps_everyone_behind_the_head() -> None:
    jobs = [HEAD, job("short", cpu=2, walltime=50, seq=2)]
    d = schedule(world([node("n1", cpu=8)], jobs, [], RUNNING, policy=FIFO))
    assert admitted(d) == {}
    assert blocked(d)["short"].reason.startswith("waiting behind job head")
    assert blocked(d)["head"].expected_start is None


def test_reserved_resources_are_counted_per_resource_not_per_node() -> None:
    # n1: 16 cpu, 8 free now, 16 from t=100; the head takes 12, so 4 cpu are slack.
    running = [run("r1", "n1", cpu=8, end=100.0)]
    head = job("head", cpu=12, walltime=500, seq=1)
    jobs = [head, job("fits", cpu=4, walltime=900, seq=2), job("no", cpu=1, walltime=900, seq=3)]
    d = schedule(world([node("n1", cpu=16)], jobs, [], running, policy=BACKFILL))
    assert list(admitted(d)) == ["fits"]
    assert blocked(d)["no"].kind is BlockKind.QUEUE


def test_a_short_job_leaves_the_slack_to_long_jobs() -> None:
    # n1: 16 cpu, 8 free now, 16 from t=100; the head takes 12, so 4 cpu are slack.  The
    # short job ends before t=100: it takes 2 of the 8 free now, and none of the slack.
    running = [run("r1", "n1", cpu=8, end=100.0)]
    jobs = [
        job("head", cpu=12, walltime=500, seq=1),
        job("short", cpu=2, walltime=50, seq=2),
        job("long", cpu=4, walltime=900, seq=3),
    ]
    d = schedule(world([node("n1", cpu=16)], jobs, [], running, policy=BACKFILL))
    assert admitted(d) == {"short": ["n1"], "long": ["n1"]}
    assert blocked(d)["head"].expected_start == 100.0


def test_a_job_without_a_time_limit_counts_as_long() -> None:
    jobs = [HEAD, job("unbounded", cpu=2, seq=2)]
    d = schedule(world([node("n1", cpu=8)], jobs, [], RUNNING, policy=BACKFILL))
    assert blocked(d)["unbounded"].kind is BlockKind.QUEUE


def test_reserved_gpu_indices_are_not_handed_out_to_long_jobs() -> None:
    # GPUs 0 and 1 are busy until t=100; the head will take 0, 1, 2; only 3 is slack.
    running = [run("r1", [("n1", (0, 1))], gpu=2, end=100.0)]
    jobs = [
        job("head", gpu=3, walltime=500, seq=1),
        job("one", gpu=1, walltime=900, seq=2),
        job("two", gpu=1, walltime=900, seq=3),
    ]
    d = schedule(world([node("n1", gpus=4)], jobs, [], running, policy=BACKFILL))
    assert blocked(d)["head"].expected_start == 100.0
    assert [a.placements[0].gpu_indices for a in d.admitted] == [(3,)]
    assert blocked(d)["two"].kind is BlockKind.QUEUE


def test_without_known_ends_backfill_falls_back_to_strict_order() -> None:
    running = [run("r1", "n1", cpu=6)]  # no expected end
    jobs = [HEAD, job("short", cpu=2, walltime=50, seq=2)]
    d = schedule(world([node("n1", cpu=8)], jobs, [], running, policy=BACKFILL))
    assert blocked(d)["head"].expected_start is None
    assert blocked(d)["short"].reason.startswith("waiting behind job head")


def test_jobs_admitted_earlier_in_the_pass_count_for_the_reservation() -> None:
    # "first" takes 4 of 8 cpu until t=200; the head (8 cpu) can start at 200.
    jobs = [job("first", cpu=4, walltime=200, seq=1), job("head", cpu=8, walltime=10, seq=2)]
    d = schedule(world([node("n1", cpu=8)], jobs, [], [], policy=BACKFILL))
    assert blocked(d)["head"].expected_start == 200.0


def test_a_job_too_big_for_the_free_room_is_blocked_for_capacity_not_by_the_queue() -> None:
    jobs = [HEAD, job("huge", cpu=7, walltime=50, seq=2)]
    d = schedule(world([node("n1", cpu=8)], jobs, [], RUNNING, policy=BACKFILL))
    assert blocked(d)["huge"].kind is BlockKind.CAPACITY
    assert blocked(d)["huge"].expected_start is None


def test_reserve_late_keeps_room_that_is_free_now_usable() -> None:
    """The head needs two whole nodes: a is free now, b and c free up at t=100.  Plain
    EASY reserves a and b (tightest, then by name), so a sits idle until t=100 and a
    long job cannot use it; with ``reserve_late`` the head gets b and c, which come
    last, and a runs the long job meanwhile.  The head's start is the same."""
    nodes = [node("a", cpu=8), node("b", cpu=8), node("c", cpu=8)]
    running = [run("rb", "b", cpu=8, end=100.0), run("rc", "c", cpu=8, end=100.0)]
    jobs = [
        job("head", cpu=8, tasks=2, walltime=500, seq=1),
        job("long", cpu=8, walltime=900, seq=2),
    ]
    plain = schedule(world(nodes, jobs, [], running, policy=BACKFILL))
    assert admitted(plain) == {}
    assert blocked(plain)["long"].kind is BlockKind.QUEUE
    late_policy = Policy(backfill=True, reserve_late=True)
    late = schedule(world(nodes, jobs, [], running, policy=late_policy))
    assert admitted(late) == {"long": ["a"]}
    assert blocked(late)["head"].expected_start == blocked(plain)["head"].expected_start == 100.0


def test_a_reservation_counts_only_nodes_the_job_may_be_placed_on() -> None:
    """A cordoned node, and a Slurm site's node for a job that names no pool, have room
    the head can never be placed on: its reservation waits for n1 (free from t=100),
    not for that room (which would say it starts now, and hold nothing)."""
    cordoned = NodeState(node("cordoned", cpu=8), accepting=False)
    site = NodeState(node("hpc-1", cpu=8, pool=site_pool("hpc", "gpu")))
    snapshot = world([node("n1", cpu=8)], [HEAD], [], RUNNING, policy=BACKFILL)
    snapshot = replace(snapshot, nodes=(*snapshot.nodes, cordoned, site))
    d = schedule(snapshot)
    assert admitted(d) == {}
    head = blocked(d)["head"]
    assert head.expected_start == 100.0
    assert head.reason.endswith("; expected to start in 00:01:40")


@settings(max_examples=150, deadline=None)
@given(worlds(), st.booleans())
def test_a_reservation_asked_by_a_time_is_the_reservation_if_it_starts_by_then(
    snapshot: Snapshot, late: bool
) -> None:
    """``reserve(until=...)`` reads the releases only up to ``until``: it finds the
    reservation a reading of them all finds when that starts by then, and none otherwise
    (``until`` at, just before and just after each release); ``starts_by`` (``starts_soon``:
    would the job start within its patience?) says whether it found one."""
    releases = sorted(
        ((r.expected_end, r.placements) for r in snapshot.running if r.expected_end is not None),
        key=lambda release: release[0],
    )
    times = {snapshot.now, math.inf, *(end + d for end, _ in releases for d in (-0.5, 0, 0.5))}
    cluster = Cluster(snapshot.nodes)
    for pending in snapshot.pending:
        found = reserve(cluster, pending, releases, snapshot.now, ordered=True, late=late)
        for until in sorted(times):
            by = reserve(
                cluster, pending, releases, snapshot.now, ordered=True, late=late, until=until
            )
            assert by == (found if found is not None and found.start <= until else None)
            assert starts_by(cluster, pending, releases, snapshot.now, until) is (by is not None)


@settings(max_examples=150, deadline=None)
@given(worlds(), st.sampled_from([0.0, 10.0, 60.0, math.inf]))
def test_a_job_no_bigger_than_one_that_starts_by_a_time_starts_by_then_too(
    snapshot: Snapshot, within: float
) -> None:
    """What lets a pass answer ``starts_soon`` for a shape from another one's answer in
    the same room (``core._Pass.could_start_by``): a job that asks no more of any resource per
    task, in no more tasks, of the same pool, starts by any time the bigger one does."""
    releases = sorted(
        ((r.expected_end, r.placements) for r in snapshot.running if r.expected_end is not None),
        key=lambda release: release[0],
    )
    cluster = Cluster(snapshot.nodes)
    until = snapshot.now + within
    jobs = [
        *snapshot.pending,
        *(
            replace(j, per_task=Resources(0, j.per_task.memory, j.per_task.gpu))
            for j in snapshot.pending
        ),
        *(replace(j, tasks=1) for j in snapshot.pending),
    ]
    starts = {j: starts_by(cluster, j, releases, snapshot.now, until) for j in jobs}
    for small in jobs:
        for big in jobs:
            if core._no_bigger(shape_of(small), shape_of(big)) and starts[big]:
                assert starts[small], (small, big)


def _free(cluster: Cluster) -> dict[str, tuple[int, int, frozenset[int]]]:
    return {n.name: (n.cpu, n.memory, frozenset(n.free_gpus)) for n in cluster.nodes()}


# Most random worlds have room for every pending job, so no head and no reservation: the
# test keeps the others (about one in six), which some seeds find too few of at first.
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(worlds(Policy(backfill=True)), st.data())
def test_the_held_view_depends_only_on_what_was_kept_not_on_trials(
    snapshot: Snapshot, data: st.DataObject
) -> None:
    """Whatever a pass keeps through the board (short jobs, long jobs), the held view it
    shows is the one recomputed from scratch (every hold lifted, then put back as free
    room and slack say): a trial that lifts the holds changes no later decision."""
    board = Board(Cluster(snapshot.nodes))
    ends = sorted(
        ((r.expected_end, r.placements) for r in snapshot.running if r.expected_end is not None),
        key=lambda end: end[0],
    )
    # As a pass does: jobs that fit are placed until the first that does not, the head.
    jobs = iter(snapshot.pending)
    head = next((j for j in jobs if board.cluster.try_place(j) is None), None)
    reservation = None if head is None else reserve(board.cluster, head, ends, snapshot.now)
    assume(reservation is not None)
    assert reservation is not None
    board.start_guard(reservation)
    for waiting in jobs:  # the jobs behind the head
        short = data.draw(st.booleans(), label=f"{waiting.id} short")
        placed = board.place(waiting, short=short)
        if placed is None:
            continue
        board.keep(placed, short=short)
        shown = _free(board.cluster)
        board.unheld()
        assert _free(board.cluster) == shown
