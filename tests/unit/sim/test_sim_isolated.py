"""The isolated replays for rho made in worker processes are those made in the caller.

A long trace's isolated replays run in forked workers beside the policies' replays
(``IsolatedReplays.start``); the caller reads their completion times once its own
replays are done.  Real processes: forked, replaying, sending their results back.
"""

from __future__ import annotations

import math
import pickle

import pytest

from virtuai.sim.engine import SimStalled, replay_order, simulate
from virtuai.sim.isolated import IsolatedReplays, Isolation, isolated_jct
from virtuai.sim.philly import philly_cluster, philly_trace


def test_replays_in_workers_are_the_replays_made_here() -> None:
    cluster = philly_cluster(12)
    jobs = philly_trace(cluster, 1500, seed=4, load=1.3)
    here = IsolatedReplays.start(jobs, cluster, Isolation.SIMULATE, workers=0).result()
    notes: list[str] = []
    workers = IsolatedReplays.start(jobs, cluster, Isolation.SIMULATE, workers=2)
    assert len(workers._workers) == 2  # (the tenants dealt to two forked processes)
    assert workers.result(notes.append) == here
    assert notes == ["waiting for the 6 isolated replays (2 worker processes)"]
    # And both are what the function of a finished replay gives, job for job.
    run = simulate(jobs, cluster)
    assert isolated_jct(run) == here
    assert not any(math.isnan(t) for t in here[0])


def test_a_worker_that_died_is_named_not_waited_for() -> None:
    cluster = philly_cluster(12)
    jobs = philly_trace(cluster, 1500, seed=4, load=1.3)
    replays = IsolatedReplays.start(jobs, cluster, Isolation.SIMULATE, workers=1)
    ((process, _),) = replays._workers
    process.kill()
    with pytest.raises(RuntimeError, match=r"worker process .* ended without their results"):
        replays.result()
    assert replays._workers == []  # (closed: nothing left running)


def test_an_error_in_a_worker_is_raised_in_the_caller() -> None:
    cluster = philly_cluster(12)
    jobs = replay_order(philly_trace(cluster, 300, seed=4))
    spec = cluster.with_tenants(j.tenant for j in jobs)
    # (Refused by the replay itself, in the worker: the caller gets the same error.)
    broken = IsolatedReplays(jobs, spec, Isolation.SIMULATE, tick_s=math.inf, workers=1)
    with pytest.raises(ValueError, match="tick_s must be >= 0 and finite"):
        broken.result()
    # A stalled replay's error crosses back too, with the jobs it names.
    again = pickle.loads(pickle.dumps(SimStalled("no progress", ["a", "b"])))
    assert isinstance(again, SimStalled) and str(again) == "no progress"
    assert again.jobs == ["a", "b"]
