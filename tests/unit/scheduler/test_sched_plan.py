"""plan(): the decision the scheduler would make for a job, without submitting it."""

from __future__ import annotations

from sched_builders import job, member, node, quota, res, run, world

from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler import plan
from virtuai.scheduler.snapshot import BlockKind, Policy

BACKFILL = Policy(backfill=True, preemption=True)


def test_a_job_that_fits_starts_now_and_says_where() -> None:
    snapshot = world([node("n1", cpu=8)], [], [], now=50.0)
    p = plan(snapshot, job("new", cpu=2))
    assert p.can_ever_run and p.starts_now
    assert p.placements == (TaskPlacement(0, "n1", res(2, "1Gi")),)
    assert p.expected_start == 50.0
    assert p.position is None and p.reason is None


def test_a_job_that_can_never_run_says_why() -> None:
    p = plan(world([node("n1", cpu=8)], [], []), job("new", cpu=64))
    assert not p.can_ever_run and not p.starts_now
    assert p.kind is BlockKind.NEVER
    assert p.reason == "can never run: asks for 64 cpu per task but the largest node has 8"


def test_a_waiting_job_gets_its_reason_position_and_expected_start() -> None:
    running = [run("r1", "n1", cpu=6, end=300.0)]
    waiting = job("w", cpu=1, priority=1000, walltime=10_000, seq=1)
    snapshot = world([node("n1", cpu=8)], [waiting], [], running, policy=BACKFILL)
    p = plan(snapshot, job("new", cpu=4, walltime=60, seq=2))
    assert p.can_ever_run and not p.starts_now
    assert p.kind is BlockKind.CAPACITY
    assert p.expected_start == 300.0
    assert p.position == 1


def test_plan_lists_the_jobs_it_would_preempt() -> None:
    tenants = [member("physics", nominal=quota(cpu=4)), member("chemistry", nominal=quota(cpu=4))]
    running = [run(f"r{i}", "n1", cpu=2, started_at=float(i)) for i in range(4)]
    snapshot = world([node("n1", cpu=8)], [], tenants, running, policy=BACKFILL)
    p = plan(snapshot, job("new", tenant="chemistry", cpu=2))
    assert p.kind is BlockKind.PREEMPTION
    assert [v.job_id for v in p.preemptions] == ["r3"]


def test_planning_an_existing_job_replaces_it() -> None:
    snapshot = world([node("n1", cpu=8)], [job("j", cpu=64)], [])
    assert plan(snapshot, job("j", cpu=2)).starts_now
