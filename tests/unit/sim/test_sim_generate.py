"""The synthetic trace generator, and the example data shipped with the package."""

from __future__ import annotations

import itertools
from dataclasses import replace
from importlib.resources import as_file, files

import pytest

from virtuai.scheduler.feasibility import Feasibility
from virtuai.scheduler.snapshot import PendingJob
from virtuai.sim.cluster import load_cluster
from virtuai.sim.generate import generate_cluster, generate_trace
from virtuai.sim.trace import TraceJob, read_trace


def offered_load(jobs: list[TraceJob], capacity: int, amount: str) -> float:
    span = jobs[-1].submit - jobs[0].submit
    work: float = sum(getattr(j.total, amount) * j.run_s for j in jobs)
    return work / (capacity * span)


def test_same_seed_same_trace() -> None:
    spec = generate_cluster(40, 3)
    assert generate_trace(spec, 300, seed=7) == generate_trace(spec, 300, seed=7)
    assert generate_trace(spec, 300, seed=7) != generate_trace(spec, 300, seed=8)


def test_jobs_fit_the_cluster_and_load_is_as_asked() -> None:
    spec = generate_cluster(100, 6)
    jobs = generate_trace(spec, 3000, seed=3, load=0.8)
    assert len(jobs) == 3000
    assert {j.tenant for j in jobs} == {t.name for t in spec.tenants}
    assert all(a.submit <= b.submit for a, b in itertools.pairwise(jobs))
    feasibility = Feasibility(spec.nodes())
    for k, j in enumerate(jobs):
        probe = PendingJob(j.id, j.tenant, j.priority, j.submit, k, j.per_task, j.tasks, j.pool)
        assert feasibility.node_reason(probe) is None, j
    busiest = max(
        offered_load(jobs, spec.capacity.gpu, "gpu"),
        offered_load(jobs, spec.capacity.cpu_milli, "cpu_milli"),
    )
    assert busiest == pytest.approx(0.8, rel=0.05)
    timed_out = sum(j.times_out for j in jobs) / len(jobs)
    assert 0.02 < timed_out < 0.08


def test_the_shipped_trace_is_the_generators() -> None:
    data = files("virtuai.sim") / "data"
    with as_file(data / "cluster-20.yaml") as c, as_file(data / "trace-2k.csv") as t:
        spec = load_cluster(c)
        shipped = read_trace(t, spec.priority_classes)
    fresh = generate_trace(spec, 2000, seed=1, load=0.7)
    # If this fails after a change to the generator, regenerate the file with
    #   virtuai sim generate --jobs 2000 --nodes 20 --tenants 4 --seed 1 --load 0.7 --out DIR
    assert [replace(j, line=0) for j in shipped] == fresh
    assert len({j.tenant for j in shipped}) == 4 and spec.node_count == 20
