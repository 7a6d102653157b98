"""The running jobs' ends kept across passes (``ends.Ends``) are the ends of the running
jobs given, in end order, whatever came before; and passes that reuse them decide as
passes that build them afresh."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from sched_builders import res
from test_sched_policy_properties import worlds

from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler import schedule
from virtuai.scheduler.ends import Ends
from virtuai.scheduler.snapshot import RunningJob, Snapshot

_POOL = [
    RunningJob(
        f"r{k}",
        "t",
        500,
        (TaskPlacement(0, f"n{k % 3}", res(1, "1Gi", 0), ()),),
        expected_end=None if k % 7 == 0 else float(k % 5),
        preempting=k % 11 == 0,
    )
    for k in range(40)
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sets(st.integers(0, len(_POOL) - 1)), min_size=1, max_size=8))
def test_kept_ends_are_the_given_jobs_in_end_order(steps: list[set[int]]) -> None:
    Ends._keeper.forget()
    for chosen in steps:
        running = tuple(_POOL[k] for k in sorted(chosen))
        ends = Ends.take(running)
        got = list(ends.releases(skip={"r1"}))
        ends.done()
        want = [
            (j.expected_end, j.placements)
            for j in running
            if j.expected_end is not None and not j.preempting and j.id != "r1"
        ]
        assert [e for e, _ in got] == sorted(e for e, _ in want)
        assert sorted(p[0].node + str(e) for e, p in got) == sorted(
            p[0].node + str(e) for e, p in want
        )


def _variants(snapshot: Snapshot) -> list[Snapshot]:
    """The same world with a running job gone, then back: what passes in a row see."""
    out = [snapshot]
    if snapshot.running:
        out.append(replace(snapshot, running=snapshot.running[1:]))
        out.append(snapshot)
    return out


@settings(max_examples=100, deadline=None)
@given(worlds(), st.booleans())
def test_passes_with_kept_ends_decide_as_fresh_ones(snapshot: Snapshot, fair: bool) -> None:
    policy = replace(snapshot.policy, backfill=True, fair_share=fair)
    for world in _variants(replace(snapshot, policy=policy)):
        kept = schedule(world)
        Ends._keeper.forget()  # the next pass builds its order from scratch
        assert schedule(world) == kept


@settings(max_examples=100, deadline=None)
@given(worlds(), st.booleans())
def test_ends_given_by_the_caller_decide_as_ends_ordered_here(
    snapshot: Snapshot, fair: bool
) -> None:
    world = replace(snapshot, policy=replace(snapshot.policy, backfill=True, fair_share=fair))
    by_end = sorted(
        (j for j in world.running if j.expected_end is not None and not j.preempting),
        key=lambda j: j.expected_end or 0.0,
    )
    assert schedule(replace(world, running_by_end=by_end)) == schedule(world)
