"""The queues kept from one pass to the next (``waiting.Waiting``) are the queues built anew.

Jobs leave (admitted) and come (submitted, preempted) between passes while most stay
the very same objects, as in the simulator: the kept queues and counts, brought up to
date by identity, must equal those built from scratch, pass after pass; also in least
attained service order, where time moves the level of a job that attained service.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from test_sched_policy_properties import NAMES, job_

from virtuai.domain.resources import Resources
from virtuai.scheduler.las import pending_level
from virtuai.scheduler.queue import due_by, queue_key, queue_order
from virtuai.scheduler.snapshot import PendingJob, Policy
from virtuai.scheduler.waiting import Waiting


def view(waiting: Waiting) -> tuple[object, ...]:
    """What a pass reads of the queues.  The kept queues' index per shape is built at the
    first pass that asks for it (here: the first) and kept up to date from then on."""
    queues = {tenant: [e[2].id for e in queue] for tenant, queue in waiting.queues.items()}
    shapes = {
        tenant: {
            shape: (
                [e[2].id for e in jobs.entries],
                jobs.limits,
                {limit: [e[2].id for e in same] for limit, same in jobs.by_limit.items()},
            )
            for shape, jobs in waiting.shape_queues(tenant).items()
        }
        for tenant in waiting.queues
    }
    return queues, shapes, waiting.by_shape, waiting.shape_count, waiting.targeted, len(waiting)


@st.composite
def job_streams(draw: st.DrawFn) -> list[list[PendingJob]]:
    """Pending queues of successive passes: each keeps some of the last one's objects."""
    tenants = NAMES[:3]
    made = 0

    def new(count: int) -> list[PendingJob]:
        nonlocal made
        jobs = [draw(job_(f"j{made + k}", tenants)) for k in range(count)]
        made += count
        return jobs

    passes = [new(draw(st.integers(0, 40)))]
    for _ in range(draw(st.integers(1, 6))):
        last = passes[-1]
        gone = draw(st.sets(st.sampled_from(range(len(last))))) if last else set()
        stay = [j for k, j in enumerate(last) if k not in gone]
        passes.append(draw(st.permutations(stay + new(draw(st.integers(0, 5))))))
    return passes


@settings(max_examples=150, deadline=None)
@given(job_streams(), st.sampled_from([0.0, 60.0]))
def test_kept_queues_are_the_queues_built_anew(
    passes: list[list[PendingJob]], cap_s: float
) -> None:
    due = due_by(cap_s) if cap_s else None
    key = queue_key(due=due)
    Waiting._keeper.forget()
    for pending in passes:
        kept = Waiting.take(tuple(pending), key, ("test", cap_s))
        try:
            assert view(kept) == view(Waiting.fresh(tuple(pending), key))
            in_order = [e[2].id for q in kept.queues.values() for e in q]
            assert sorted(in_order) == sorted(j.id for j in pending)
            for tenant, queue in kept.queues.items():
                mine = [j for j in pending if j.tenant == tenant]
                assert [e[2] for e in queue] == queue_order(mine, due=due)
        finally:
            kept.done()


def test_one_object_twice_counts_twice_and_is_not_kept() -> None:
    job = PendingJob("a", "t1", 0, 0.0, 0, Resources(1000, 0, 0))
    Waiting._keeper.forget()
    twice = Waiting.take((job, job), queue_key(), "plain")
    assert len(twice) == 2 and [e[2] for e in twice.queues["t1"]] == [job, job]
    twice.done()
    once = Waiting.take((job,), queue_key(), "plain")
    assert len(once) == 1 and once is not twice
    once.done()


@settings(max_examples=100, deadline=None)
@given(job_streams())
def test_queues_updated_from_what_changed_are_the_queues_built_anew(
    passes: list[list[PendingJob]],
) -> None:
    """The caller says what left and joined (``Snapshot.pending_since``), as the
    simulator does: the kept queues updated from that alone are the queues built anew."""
    key = queue_key()
    Waiting._keeper.forget()
    last: tuple[PendingJob, ...] | None = None
    for jobs in passes:
        pending = tuple(jobs)
        since = None
        if last is not None:
            now, before = {id(j) for j in pending}, {id(j) for j in last}
            gone = tuple(j for j in last if id(j) not in now)
            since = (last, gone, tuple(j for j in pending if id(j) not in before))
        kept = Waiting.take(pending, key, "plain", since)
        try:
            assert view(kept) == view(Waiting.fresh(pending, key))
        finally:
            kept.done()
        last = pending


@settings(max_examples=100, deadline=None)
@given(job_streams(), st.lists(st.floats(0, 200), min_size=7, max_size=7), st.data())
def test_kept_las_queues_move_the_jobs_whose_level_changed(
    passes: list[list[PendingJob]], steps: list[float], data: st.DataObject
) -> None:
    """As time passes, the starvation guard brings jobs that attained service back to
    level 0: the kept queues move them as the queues built anew place them."""
    policy = Policy(las_thresholds_gpu_s=(0.05, 5.0), starvation_factor=2.0, starvation_min_s=20.0)
    served = {
        id(j): replace(j, attained_gpu_s=data.draw(st.sampled_from([0.0, 0.0, 0.06, 6.0])))
        for jobs in passes
        for j in jobs
    }
    Waiting._keeper.forget()
    now = 40.0
    for jobs, step in zip(passes, steps, strict=False):
        now += step
        pending = tuple(served[id(j)] for j in jobs)

        def level(job: PendingJob, now: float = now) -> int:
            return pending_level(job, now, policy)

        key = queue_key(level)
        kept = Waiting.take(pending, key, "las", moves=lambda j: j.attained_gpu_s > 0)
        try:
            assert view(kept) == view(Waiting.fresh(pending, key))
        finally:
            kept.done()
