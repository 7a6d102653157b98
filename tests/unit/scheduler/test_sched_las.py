"""Least attained service (``las.py``): order within a tenant, preemption by level,
the starvation guard, the minimum run, and no eviction back and forth."""

from __future__ import annotations

from dataclasses import replace

from sched_builders import job, node, res, state

from virtuai.domain.tenancy import Quota
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler import schedule
from virtuai.scheduler.snapshot import Policy, RunningJob, Snapshot, TenantState
from virtuai.server.up import policy_from_settings
from virtuai.settings import SchedulerSettings

LAS = replace(Policy.las(), min_run_s=600, las_thresholds_gpu_s=(3600.0, 16 * 3600.0))
HOUR = 3600.0


def _running(id: str, tenant: str, started: float, attained: float = 0.0) -> RunningJob:
    return RunningJob(
        id,
        tenant,
        500,
        (TaskPlacement(0, "n", res(1, "1Gi", 1), (0,)),),
        started_at=started,
        attained_gpu_s=attained,
    )


def _snap(pending: list, running: tuple = (), now: float = 10 * HOUR) -> Snapshot:
    busy = frozenset(g for r in running for p in r.placements for g in p.gpu_indices)
    used = res(len(running), f"{len(running)}Gi", len(running))
    n = state(node("n", cpu=8, memory="64Gi", gpus=1))
    n = replace(n, allocated=used, busy_gpus=busy)
    tenants = (TenantState("a", Quota()), TenantState("b", Quota()))
    return Snapshot((n,), tenants, tuple(pending), running, now=now, policy=LAS)


def test_less_attained_service_goes_first_within_a_tenant() -> None:
    old = replace(job("old", tenant="a", gpu=1, submitted_at=0), attained_gpu_s=2 * HOUR)
    new = job("new", tenant="a", gpu=1, submitted_at=5 * HOUR)
    decisions = schedule(_snap([old, new], now=5 * HOUR + 60))
    assert [a.job_id for a in decisions.admitted] == ["new"]


def test_the_starvation_guard_puts_a_long_waiting_job_back_first() -> None:
    # It ran 2 h (2 GPU-hours on 1 GPU) and has waited 8 h since: 4x as long.
    old = replace(job("old", tenant="a", gpu=1, submitted_at=0), attained_gpu_s=2 * HOUR)
    new = job("new", tenant="a", gpu=1, submitted_at=9 * HOUR)
    decisions = schedule(_snap([old, new], now=10 * HOUR))
    assert [a.job_id for a in decisions.admitted] == ["old"]


def test_a_new_job_preempts_a_long_running_one_of_its_tenant_after_the_minimum_run() -> None:
    long = _running("long", "a", started=8 * HOUR)  # 2 GPU-hours: level 1
    # The preemptor itself must have waited ``min_run_s`` (backfill may start it before).
    just = job("new", tenant="a", gpu=1, submitted_at=10 * HOUR - 60)
    assert schedule(_snap([just], (long,))).preempted == ()
    new = job("new", tenant="a", gpu=1, submitted_at=10 * HOUR - 700)
    decisions = schedule(_snap([new], (long,)))
    assert [(p.job_id, p.preemptor_id) for p in decisions.preempted] == [("long", "new")]
    assert decisions.preempted[0].reason == (
        "preempted for job new of tenant a, which has attained less service (level 0 under 1)"
    )
    # Not before it ran ``min_run_s`` in this attempt, whatever it attained before.
    fresh = _running("long", "a", started=10 * HOUR - 60, attained=5 * HOUR)
    assert schedule(_snap([new], (fresh,))).preempted == ()


def test_a_running_job_kept_from_the_last_pass_is_ranked_at_its_new_level() -> None:
    """The same running job object, half a GPU-hour in (level 0) and then past the first
    threshold (level 1), is not a victim in the first pass and is in the second: its
    standing kept between passes (``victimindex.VictimIndex``) follows its level."""
    long = _running("long", "a", started=8 * HOUR)
    new = job("new", tenant="a", gpu=1, submitted_at=8 * HOUR - 700)
    first = _snap([new], (long,), now=8 * HOUR + 1800)
    assert schedule(first).preempted == ()
    decisions = schedule(replace(first, now=9 * HOUR + 60))  # the same node and job objects
    assert [(p.job_id, p.preemptor_id) for p in decisions.preempted] == [("long", "new")]


def test_same_level_jobs_do_not_preempt_each_other() -> None:
    short = _running("short", "a", started=10 * HOUR - 1800)  # half a GPU-hour: level 0
    new = job("new", tenant="a", gpu=1, submitted_at=10 * HOUR - 700)
    assert schedule(_snap([new], (short,))).preempted == ()


def test_a_job_never_preempts_the_job_that_preempted_it() -> None:
    long = _running("long", "a", started=8 * HOUR)
    back = replace(job("back", tenant="a", gpu=1, submitted_at=0), preempted_by=frozenset({"long"}))
    assert schedule(_snap([back], (long,))).preempted == ()


def test_a_job_never_preempts_any_job_that_once_preempted_it() -> None:
    # "long" preempted "back" once; later "other" preempted "back" too.  "back" remembers
    # both, so it does not take the GPU back from "long" (which would then take it back).
    long = _running("long", "a", started=8 * HOUR)
    back = replace(
        job("back", tenant="a", gpu=1, submitted_at=0), preempted_by=frozenset({"long", "other"})
    )
    assert schedule(_snap([back], (long,))).preempted == ()
    fresh = replace(back, preempted_by=frozenset({"other"}))
    assert [p.job_id for p in schedule(_snap([fresh], (long,))).preempted] == ["long"]


def test_across_tenants_only_a_tenant_above_its_share_loses_jobs() -> None:
    # b holds the GPU (its share is higher than a's): a's new job may take it back.
    long_b = _running("long", "b", started=8 * HOUR)
    new_a = job("new", tenant="a", gpu=1, submitted_at=10 * HOUR - 700)
    decisions = schedule(_snap([new_a], (long_b,)))
    assert [p.job_id for p in decisions.preempted] == ["long"]
    assert decisions.preempted[0].reason == (
        "preempted for job new of tenant a, which has attained less service (level 0 under 1)"
        "; tenant b is further above its fair share"
    )


def test_the_live_server_selects_it_by_settings() -> None:
    assert policy_from_settings(SchedulerSettings(las=True)) == Policy.las()
    plain = policy_from_settings(SchedulerSettings(min_run_s=120))
    assert plain.las_thresholds_gpu_s == ()
    assert plain.min_run_s == 120


def test_no_las_preemption_for_a_job_backfill_starts_within_the_patience() -> None:
    # ``las_patience_s`` (12 h in ``Policy.las()``): the victim's known end decides.
    new = job("new", tenant="a", gpu=1, submitted_at=10 * HOUR - 700)
    for ends_in, preempts in ((HOUR, False), (11 * HOUR, False), (13 * HOUR, True)):
        long = replace(_running("long", "a", started=8 * HOUR), expected_end=10 * HOUR + ends_in)
        decisions = schedule(_snap([new], (long,)))
        assert [p.job_id for p in decisions.preempted] == (["long"] if preempts else [])
    # Off (0): LAS preempts whenever it may, as before.
    soon = replace(_running("long", "a", started=8 * HOUR), expected_end=11 * HOUR)
    eager = replace(_snap([new], (soon,)), policy=replace(LAS, las_patience_s=0.0))
    assert [p.job_id for p in schedule(eager).preempted] == ["long"]


def test_a_pass_that_stops_early_still_lets_a_job_behind_the_head_preempt() -> None:
    """The simulator's passes stop once no job left can start (``report_blocked`` off);
    with preemption, only once none would preempt either.  Behind a head that waits in
    pool p1 (too young to preempt for its level, of a tenant with nothing to preempt), a
    job of pool p2 preempts the running one there, for its level (its shape would not
    start within the patience) or for its priority (also behind a head of lower priority
    that is nominated), as a pass deciding every job does."""

    def running(id: str, tenant: str, node: str, gpus: int, ends: float) -> RunningJob:
        gpu = TaskPlacement(0, node, res(1, "1Gi", gpus), tuple(range(gpus)))
        return RunningJob(id, tenant, 500, (gpu,), started_at=8 * HOUR, expected_end=ends)

    other = running("other", "b", "n1", 1, 11 * HOUR)  # the head's reservation: 1 h away
    long = running("long", "a", "n2", 2, 23 * HOUR)  # level 1, 13 h to go: past the patience
    nodes = tuple(
        replace(
            state(node(r.placements[0].node, cpu=8, memory="64Gi", gpus=2, pool=pool)),
            allocated=r.placements[0].resources,
            busy_gpus=frozenset(r.placements[0].gpu_indices),
        )
        for r, pool in ((other, "p1"), (long, "p2"))
    )
    head = job("head", tenant="b", gpu=2, pool="p1", submitted_at=10 * HOUR - 60)
    new = job("new", tenant="a", gpu=2, pool="p2", submitted_at=10 * HOUR - 700)
    tenants = (TenantState("a", Quota()), TenantState("b", Quota()))
    by_level = Snapshot(nodes, tenants, (head, new), (other, long), now=10 * HOUR, policy=LAS)
    by_priority = replace(
        by_level,
        pending=(
            replace(head, priority=1000),
            replace(new, priority=1000, submitted_at=head.submitted_at),
        ),
        running=(replace(other, priority=1000), long),
    )
    # A nominated head comes first whatever its priority: the queue's priority order, which
    # bounds the priorities left, starts after it.  (``long`` ends within the patience.)
    behind_nominated = replace(
        by_level,
        pending=(
            replace(head, nominated=True),
            replace(new, priority=1000, submitted_at=head.submitted_at),
        ),
        running=(other, replace(long, expected_end=15 * HOUR)),
    )
    for world in (by_level, by_priority, behind_nominated):
        full = schedule(world)
        assert full.blocked[0].job_id == "head"  # (the first job the pass considered)
        quick = schedule(replace(world, policy=replace(LAS, report_blocked=False)))
        assert [(p.job_id, p.preemptor_id) for p in quick.preempted] == [("long", "new")]
        assert quick.preempted == full.preempted
