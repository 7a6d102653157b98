"""Shortest first within a priority and LAS level (``Policy.short_first_cap_s``,
``queue.due_by``): jobs go by submission time plus time limit, so short jobs of a
burst go first, yet no job is overtaken by a job due after it (no starvation)."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from sched_builders import job, node, state

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import Quota
from virtuai.scheduler import schedule
from virtuai.scheduler.fairshare import ShareTracker
from virtuai.scheduler.queue import due_by, fair_order, queue_order
from virtuai.scheduler.snapshot import PendingJob, Policy, Snapshot, TenantState

HOUR = 3600.0
CAP = 72 * HOUR


def _one_gpu_node_snapshot(pending: list[PendingJob], policy: Policy) -> Snapshot:
    n = state(node("n", cpu=8, memory="64Gi", gpus=1))
    return Snapshot((n,), (TenantState("a", Quota()),), tuple(pending), now=HOUR, policy=policy)


def test_the_shorter_job_of_a_burst_goes_first() -> None:
    long = job("long", tenant="a", gpu=1, submitted_at=0, walltime=int(10 * HOUR))
    short = job("short", tenant="a", gpu=1, submitted_at=0, walltime=int(HOUR))
    on = _one_gpu_node_snapshot([long, short], Policy(fair_share=True, short_first_cap_s=CAP))
    assert [a.job_id for a in schedule(on).admitted] == ["short"]
    off = replace(on, policy=Policy(fair_share=True))  # submission order: the first one
    assert [a.job_id for a in schedule(off).admitted] == ["long"]


def test_las_uses_it_and_a_job_without_a_limit_counts_the_cap() -> None:
    assert Policy.las().short_first_cap_s == CAP
    endless = job("endless", tenant="a", gpu=1, submitted_at=0)
    # Due at 0 + 72 h; a 71-hour job submitted an hour later is due at 72 h too, and goes
    # after it (the submission time breaks the tie); a 70-hour one goes first.
    tie = job("tie", tenant="a", gpu=1, submitted_at=HOUR, walltime=int(71 * HOUR))
    first = job("first", tenant="a", gpu=1, submitted_at=HOUR, walltime=int(70 * HOUR))
    order = queue_order([tie, endless, first], due=due_by(CAP))
    assert [j.id for j in order] == ["first", "endless", "tie"]


def test_a_long_job_is_not_overtaken_by_jobs_submitted_after_it_is_due() -> None:
    long = job("long", tenant="a", gpu=1, submitted_at=0, walltime=int(5 * HOUR))
    early = job("early", tenant="a", gpu=1, submitted_at=3 * HOUR, walltime=int(HOUR))
    late = job("late", tenant="a", gpu=1, submitted_at=5 * HOUR, walltime=1800)
    order = queue_order([late, long, early], due=due_by(CAP))
    assert [j.id for j in order] == ["early", "long", "late"]


_jobs = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([100, 500]),
        st.integers(0, 20),  # submitted, hours
        st.one_of(st.none(), st.integers(1, 100)),  # time limit, hours (None: none)
        st.booleans(),  # nominated
    ),
    min_size=1,
    max_size=30,
)


def _pending(rows: list[tuple[str, int, int, int | None, bool]]) -> list[PendingJob]:
    return [
        replace(
            job(
                f"j{k}",
                tenant=tenant,
                priority=priority,
                submitted_at=submitted * HOUR,
                walltime=None if limit is None else limit * int(HOUR),
                seq=k,
            ),
            nominated=nominated,
        )
        for k, (tenant, priority, submitted, limit, nominated) in enumerate(rows)
    ]


def _tracker(pending: list[PendingJob]) -> ShareTracker:
    tenants = [TenantState(t, Quota()) for t in ("a", "b", "c")]
    held = {"a": Resources(0, 0, 2), "b": Resources(0, 0, 1), "c": Resources(0, 0, 0)}
    return ShareTracker(
        tenants,
        held,
        Resources(8000, 64 * 2**30, 8),
        now=30 * HOUR,
        half_life_s=7 * 24 * HOUR,
        allocation_weight=0.5,
    )


@given(_jobs, st.randoms(use_true_random=False))
def test_within_a_tenant_and_priority_no_job_goes_before_one_due_earlier(
    rows: list[tuple[str, int, int, int | None, bool]], rnd: random.Random
) -> None:
    pending = _pending(rows)
    due = due_by(CAP)
    shuffled = list(pending)
    rnd.shuffle(shuffled)
    fair = list(fair_order(shuffled, _tracker(pending), due=due))
    plain = queue_order(shuffled, due=due)
    # Every job exactly once, whatever the listing order.
    assert sorted(j.id for j in fair) == sorted(j.id for j in pending)
    assert [j.id for j in fair] == [j.id for j in fair_order(pending, _tracker(pending), due=due)]
    assert [j.id for j in plain] == [j.id for j in queue_order(pending, due=due)]
    for order in (fair, plain):
        for i, a in enumerate(order):
            for b in order[i + 1 :]:
                if (a.tenant, a.priority, a.nominated) == (b.tenant, b.priority, b.nominated):
                    # No starvation: b could go first only if it were due first.
                    assert (due(a), a.submitted_at, a.seq) <= (due(b), b.submitted_at, b.seq)
                    # Shortest first among jobs submitted together.
                    if a.submitted_at == b.submitted_at:
                        assert (a.walltime_s or CAP) <= (b.walltime_s or CAP) or (
                            min(a.walltime_s or CAP, CAP) == min(b.walltime_s or CAP, CAP)
                        )


@given(_jobs)
def test_with_equal_limits_the_order_is_the_submission_order(
    rows: list[tuple[str, int, int, int | None, bool]],
) -> None:
    # The same limit for every job (or none at all, or all beyond the cap): exactly the
    # order without short-first, so the poor-walltime cases are scheduled as before.
    for limit in (None, 2, 200):
        pending = _pending([(t, p, s, limit, n) for t, p, s, _, n in rows])
        with_due = [j.id for j in fair_order(pending, _tracker(pending), due=due_by(CAP))]
        without = [j.id for j in fair_order(pending, _tracker(pending))]
        assert with_due == without
        assert [j.id for j in queue_order(pending, due=due_by(CAP))] == [
            j.id for j in queue_order(pending)
        ]
