"""The replay's shortcuts change no outcome: a Philly-shaped replay with them is the replay
without them, job for job.

The simulator asks the scheduler for admissions and rejections only
(``Policy.report_blocked=False``): a pass then stops early, and leaves undecided the
jobs that can neither start nor change anything; the queues are kept from pass to pass
(``waiting.Waiting``); a blocked decision is remembered per tenant and shape (and, with
preemption, what a victim search reads of the job).  Here every pass of a second replay
decides every job in full, over queues built anew: both replays must start, finish and
reject the same jobs at the same times, through the same passes.  Small hypothesis
worlds rarely reach the states that matter (a reservation standing, short jobs
backfilling around it, hundreds of jobs of a few shapes); a busy Philly-shaped day
does, every pass.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from virtuai.scheduler import core, schedule
from virtuai.scheduler.snapshot import Decisions, Snapshot
from virtuai.scheduler.waiting import Waiting
from virtuai.sim.cluster import ClusterSpec
from virtuai.sim.engine import Simulation
from virtuai.sim.philly import philly_cluster, philly_trace
from virtuai.sim.policy import PolicySpec, example_policy
from virtuai.sim.trace import TraceJob


def every_job_decided(snapshot: Snapshot) -> Decisions:
    Waiting._keeper.forget()  # queues built anew
    core.MEMO_BLOCKED = False
    try:
        return schedule(replace(snapshot, policy=replace(snapshot.policy, report_blocked=True)))
    finally:
        core.MEMO_BLOCKED = True


@pytest.mark.parametrize(
    "policy",
    [
        example_policy("fifo"),
        example_policy("fairshare-backfill"),
        replace(example_policy("fairshare-backfill"), reserve_depth=2, name="depth-2"),
        replace(
            example_policy("fairshare-backfill"), short_first_cap_s=4 * 3600.0, name="short-first"
        ),
        # Preemption (a pass stops early once no job left would preempt either) and least
        # attained service (queues keyed anew for the jobs that attained service, as the
        # starvation guard moves them).
        example_policy("las-fairshare"),
    ],
    ids=lambda p: p.name if isinstance(p, PolicySpec) else str(p),
)
@pytest.mark.parametrize("load", [0.8, 1.5])
def test_shortcuts_change_no_outcome(policy: PolicySpec, load: float) -> None:
    cluster = philly_cluster(16)
    trace = philly_trace(cluster, 1200, seed=5, load=load)
    assert_same_replay(trace, cluster, policy)


def assert_same_replay(trace: list[TraceJob], cluster: ClusterSpec, policy: PolicySpec) -> None:
    quick = Simulation(trace, cluster, policy).run()
    full = Simulation(trace, cluster, policy, scheduler=every_job_decided).run()
    assert quick.passes == full.passes
    assert quick.outcome == full.outcome
    assert quick.first_start == full.first_start
    assert quick.finish == full.finish
    assert quick.preemptions == full.preemptions


@pytest.mark.parametrize("policy", ["las-fairshare", "fairshare-backfill-preemption"])
def test_shortcuts_change_no_outcome_with_three_priorities(policy: str) -> None:
    """Jobs of three priority classes, a fifth not preemptible: jobs preempt for their
    priority too, and a pass stops early only where no job left would."""
    cluster = philly_cluster(16)
    rng = random.Random(5)
    trace = [
        replace(j, priority=rng.choice([100, 500, 1000]), preemptible=rng.random() < 0.8)
        for j in philly_trace(cluster, 1200, seed=5, load=1.5)
    ]
    assert_same_replay(trace, cluster, example_policy(policy))
