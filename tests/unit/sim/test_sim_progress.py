"""Preemption always makes progress: replays with preemption on finish every job.

The scheduler runs pass after pass inside the simulator over random clusters,
tenants and job streams (hypothesis).  A replay that stops making progress
raises ``SimStalled`` (after ``stall_passes`` passes with nothing finished or
submitted), so "the clock advances and every job finishes" is: no ``SimStalled``
and every job ``succeeded``/``timed_out``/``rejected``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_builders import cluster, job, pool

from virtuai.domain.tenancy import PoolQuota, Quota
from virtuai.scheduler import schedule
from virtuai.scheduler.snapshot import Decisions, Preemption, Snapshot
from virtuai.sim.cluster import TenantSpec
from virtuai.sim.engine import Outcome, SimStalled, Simulation, simulate
from virtuai.sim.policy import Backfill, Order, PolicySpec
from virtuai.sim.trace import TraceJob

DONE = {Outcome.SUCCEEDED, Outcome.TIMED_OUT, Outcome.REJECTED}
POLICIES = (
    PolicySpec("priority", Order.FAIRSHARE, backfill=Backfill.EASY, preemption=True),
    PolicySpec(
        "las",
        Order.LAS,
        backfill=Backfill.EASY,
        preemption=True,
        min_run_s=60,
        las_thresholds_gpu_s=(100.0, 1000.0),
        starvation_factor=2.0,
        starvation_min_s=100.0,
        checkpoint_interval_s=50.0,
        restart_overhead_s=5.0,
    ),
    PolicySpec("grace", Order.FIFO, preemption=True, preemption_grace_s=30.0),
)
# LAS with any tenant's gangs (several nodes) preemptible by smaller jobs (#12 round 9:
# ``gang_victim_ratio``; a tiny bound so that the exception applies as often as it can).
POLICIES += (replace(POLICIES[1], name="las-gangs", gang_victim_ratio=1e-9),)


@st.composite
def quotas(draw: st.DrawFn, tenants: list[str]) -> tuple[TenantSpec, ...]:
    """None, or GPU and CPU quotas per tenant, most in one cohort (so they borrow, lend
    and reclaim), some with limits on either."""
    if draw(st.booleans()):
        return ()
    specs = []
    for name in tenants:
        limit = st.sampled_from([Quota(), Quota(gpu=1), Quota(cpu_milli=4000)])
        specs.append(
            TenantSpec(
                name,
                Quota(
                    cpu_milli=draw(st.sampled_from([None, 4000, 8000])),
                    gpu=draw(st.sampled_from([None, 1, 2, 4])),
                ),
                cohort=draw(st.sampled_from(["lab", "lab", None])),
                borrowing_limit=draw(limit),
                lending_limit=draw(limit),
                pool_quotas=draw(
                    st.sampled_from([(), (PoolQuota("gpu", Quota(cpu_milli=4000, gpu=1)),)])
                ),
            )
        )
    return tuple(specs)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[TraceJob], int, int, tuple[TenantSpec, ...]]:
    nodes = draw(st.integers(1, 3))
    gpus = draw(st.sampled_from([0, 2, 4]))
    tenants = draw(st.sampled_from([["a"], ["a", "b"], ["a", "b", "c"]]))
    count = draw(st.integers(1, 25))
    jobs = []
    for n in range(count):
        g = draw(st.integers(0, gpus)) if gpus else 0
        jobs.append(
            job(
                str(n),
                submit=draw(st.integers(0, 2000)),
                duration=draw(st.integers(1, 3000)),
                walltime=draw(st.sampled_from([math.inf, 500.0, 4000.0])),
                tenant=draw(st.sampled_from(tenants)),
                cpu=draw(st.integers(1, 8)),
                gpus=g,
                tasks=draw(st.integers(1, 2)),
                priority=draw(st.sampled_from([100, 500, 500, 1000])),
                preemptible=draw(st.booleans()),
            )
        )
    return jobs, nodes, gpus, draw(quotas(tenants))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from(POLICIES))
def test_every_job_finishes_with_preemption_on(
    stream: tuple[list[TraceJob], int, int, tuple[TenantSpec, ...]], policy: PolicySpec
) -> None:
    """Also with jobs that cannot be preempted, and tenants' quotas, cohorts and limits: a
    job ends, or is rejected as never able to run; none waits for ever."""
    jobs, nodes, gpus, tenants = stream
    world = cluster(pool(count=nodes, cpu=8, gpus=gpus), tenants=tenants)
    run = simulate(jobs, world, policy, stall_passes=200)
    assert all(outcome in DONE for outcome in run.outcome), run.outcome
    done = [f for f, o in zip(run.finish, run.outcome, strict=True) if o != Outcome.REJECTED]
    assert all(math.isfinite(f) for f in done)
    # Two jobs never evict each other back and forth.
    pairs = set(run.evictions)
    assert not any((b, a) in pairs for a, b in pairs), run.evictions
    # Every preemption bought progress: no job is preempted more often than passes ran.
    assert sum(run.preemptions) <= run.passes


def test_a_job_never_preempts_back_an_earlier_preemptor_of_its_own() -> None:
    # Found by the property above (LAS): 9 preempted 6, then 2 preempted 6, then 6 (whose
    # last preemptor was 2) preempted 9, and 9 preempted 6 again.  Every preemptor counts.
    short = {"cpu": 1, "priority": 100, "tenant": "a"}
    jobs = [
        job("0", 0, 121, tenant="b", cpu=1, tasks=2, priority=100),
        job("1", 0, 1, **short),
        job("2", 1, 1, tenant="a", cpu=7, gpus=2),
        job("3", 1, 1, tenant="c", cpu=1, gpus=2),
        job("4", 0, 239, tenant="a", cpu=2, tasks=2),
        job("5", 0, 1, **short),
        job("6", 0, 106, tenant="a", cpu=1, gpus=2),
        *(job(str(n), 0, 1, **short) for n in (7, 8)),
        job("9", 0, 107, walltime=500.0, tenant="a", cpu=1, gpus=2),
        job("10", 0, 1, **short),
        job("11", 0, 1, tenant="c", cpu=5, tasks=2),
        *(job(str(n), 0, 1, **short) for n in (12, 13, 14, 15)),
    ]
    run = simulate(jobs, cluster(pool(count=2, cpu=8, gpus=2)), POLICIES[1], stall_passes=200)
    assert run.evictions, "the case must still preempt, or it tests nothing"
    pairs = set(run.evictions)
    assert not any((b, a) in pairs for a, b in pairs), run.evictions
    assert all(outcome in DONE for outcome in run.outcome)


def test_a_victim_is_not_preempted_again_before_its_minimum_run() -> None:
    policy = PolicySpec("p", preemption=True, min_run_s=500)
    jobs = [
        job("low", 0, 10_000, cpu=8, priority=100),
        job("high1", 10, 100, cpu=8, priority=500),
        job("high2", 120, 100, cpu=8, priority=1000),
    ]
    run = simulate(jobs, cluster(pool(cpu=8)), policy)
    # low is not preempted at 10 or 120 (it ran < 500 s): at 500 the first in line, high2,
    # preempts it; high1 follows when high2 ends.
    assert run.first_start[2] == 500
    assert run.first_start[1] == 600
    assert run.preemptions == [1, 0, 0]


def _thrash(snapshot: Snapshot) -> Decisions:
    """A broken scheduler, the issue's cycle: it admits by plain FIFO, ignoring nomination
    (so a victim takes back the room it just freed), and in the same pass preempts the
    oldest running job for the oldest waiting one."""
    pending = tuple(replace(j, nominated=False) for j in snapshot.pending)
    admitted = schedule(replace(snapshot, pending=pending)).admitted
    running = sorted((r for r in snapshot.running if not r.preempting), key=lambda r: r.seq)
    if not running or not pending:
        return Decisions(admitted)
    first = min(pending, key=lambda j: j.seq)
    return Decisions(admitted, preempted=(Preemption(running[0].id, first.id, "thrash"),))


def test_a_replay_without_progress_stops_naming_the_jobs() -> None:
    jobs = [job("a", 0, 10_000, cpu=8), job("b", 0, 10_000, cpu=8), job("c", 10, 100, cpu=8)]
    with pytest.raises(SimStalled) as caught:
        Simulation(
            jobs,
            cluster(pool(cpu=16)),
            PolicySpec("p", preemption=True),
            stall_passes=50,
            scheduler=_thrash,
        ).run()
    message = str(caught.value)
    assert message.startswith(
        "no progress at simulated time 10 s: 50 scheduling passes started or preempted jobs"
    )
    assert message.endswith("preempted over and over: job b (25x), job a (24x)")
    assert caught.value.jobs == ["b", "a"]


def test_a_long_run_is_no_stall_however_many_passes_change_nothing() -> None:
    """While one long job runs and another waits for it, the wake-ups of 60 short jobs that
    ended long before (their minimum run's end) make passes that start nothing: they are
    not a lack of progress, and the replay ends with every job done."""
    shorts = [job(f"s{k}", 0, 10, cpu=4) for k in range(60)]
    jobs = [job("long", 0, 100_000, cpu=4), *shorts, job("whole", 700, 100, cpu=8)]
    run = Simulation(
        jobs, cluster(pool(cpu=8)), PolicySpec("p", preemption=True, min_run_s=5000),
        stall_passes=50,
    ).run()  # fmt: skip
    assert all(outcome is Outcome.SUCCEEDED for outcome in run.outcome)
    assert run.first_start[-1] == 100_000
    assert run.passes > 60  # (the wake-ups did make passes)


def test_checkpoints_keep_work_and_restarts_cost_their_overhead() -> None:
    policy = PolicySpec("p", preemption=True, checkpoint_interval_s=100, restart_overhead_s=20)
    jobs = [job("low", 0, 1000, cpu=8, priority=100), job("high", 250, 50, cpu=8)]
    run = simulate(jobs, cluster(pool(cpu=8)), policy)
    # low ran 250 s, kept 200 (two checkpoints), lost 50; restarts at 300 with 800 left.
    assert run.lost[0] == 50
    assert run.finish[1] == 300
    assert run.finish[0] == 300 + 20 + 800


def test_a_jobs_own_checkpoint_cost_overrides_the_policys() -> None:
    """A trace says which jobs checkpoint how often: here one never does (it starts over)
    and one checkpoints every 50 s and restarts in 5 s, under a policy of 100 s and 20 s."""
    policy = PolicySpec("p", preemption=True, checkpoint_interval_s=100, restart_overhead_s=20)
    jobs = [
        replace(job("never", 0, 1000, cpu=4, priority=100), checkpoint_interval=0.0),
        replace(
            job("often", 0, 1000, cpu=4, priority=100),
            checkpoint_interval=50.0,
            restart_overhead=5.0,
        ),
        job("high", 260, 40, cpu=8),
    ]
    run = simulate(jobs, cluster(pool(cpu=8)), policy)
    assert run.finish[2] == 300
    # preempted at 260: "never" keeps nothing, "often" keeps 250 s (five checkpoints)
    assert (run.lost[0], run.lost[1]) == (260, 10)
    assert run.finish[0] == 300 + 20 + 1000
    assert run.finish[1] == 300 + 5 + 750
