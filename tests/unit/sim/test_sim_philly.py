"""Philly-shaped traces: the walltime kinds share every other draw, and replay."""

from __future__ import annotations

import math

import pytest

from virtuai.sim.engine import Outcome, simulate
from virtuai.sim.philly import WALLTIMES, philly_cluster, philly_trace
from virtuai.sim.policy import example_policy


def test_walltime_kinds_change_only_the_walltimes() -> None:
    cluster = philly_cluster(8)
    traces = {kind: philly_trace(cluster, 300, seed=3, walltimes=kind) for kind in WALLTIMES}
    strip = {
        kind: [(j.id, j.submit, j.duration, j.tenant, j.per_task, j.tasks) for j in trace]
        for kind, trace in traces.items()
    }
    assert strip["estimate"] == strip["default"] == strip["none"]
    estimate = traces["estimate"]
    assert all(j.duration * 1.2 <= j.walltime <= j.duration * 4 + 1800 for j in estimate)
    assert {j.walltime for j in traces["default"]} == {3 * 86400.0}
    assert all(math.isinf(j.walltime) for j in traces["none"])
    assert not any(j.times_out for kind in WALLTIMES for j in traces[kind])


def test_an_unknown_walltime_kind_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="walltimes must be one of estimate, default, none"):
        philly_trace(philly_cluster(2), 10, walltimes="guess")


@pytest.mark.parametrize("kind", ["default", "none"])
def test_every_job_finishes_without_useful_walltimes(kind: str) -> None:
    cluster = philly_cluster(4)
    trace = philly_trace(cluster, 150, seed=2, load=1.2, walltimes=kind)
    for name in ("fairshare-backfill", "las-fairshare"):
        run = simulate(trace, cluster, example_policy(name))
        assert set(run.outcome) == {Outcome.SUCCEEDED}, name
