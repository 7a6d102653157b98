"""The shipped 2,000-job trace under every example policy, through the real scheduler."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from importlib.resources import as_file, files
from typing import Any

import numpy as np
import pytest

from virtuai.sim.cluster import ClusterSpec, load_cluster
from virtuai.sim.engine import Outcome, simulate
from virtuai.sim.freeroom import FreeRoom
from virtuai.sim.isolated import Isolation
from virtuai.sim.policy import EXAMPLE_POLICIES, example_policy
from virtuai.sim.report import PolicyReport, report_json, run_policies, trace_info
from virtuai.sim.trace import TraceJob, read_trace


@pytest.fixture(scope="module")
def example() -> Iterator[tuple[list[TraceJob], ClusterSpec]]:
    data = files("virtuai.sim") / "data"
    with as_file(data / "cluster-20.yaml") as c, as_file(data / "trace-2k.csv") as t:
        spec = load_cluster(c)
        yield read_trace(t, spec.priority_classes), spec


@pytest.fixture(scope="module")
def reports(example: tuple[list[TraceJob], ClusterSpec]) -> dict[str, PolicyReport]:
    jobs, spec = example
    policies = [example_policy(name) for name in EXAMPLE_POLICIES]
    done = run_policies(jobs, spec, policies, isolation=Isolation.SIMULATE)
    return {r.policy.name: r for r in done}


@pytest.mark.parametrize("policy", EXAMPLE_POLICIES)
def test_every_job_finishes(reports: dict[str, PolicyReport], policy: str) -> None:
    run = reports[policy].run
    assert set(run.outcome) <= {Outcome.SUCCEEDED, Outcome.TIMED_OUT}
    assert not any(math.isnan(f) for f in run.finish)


@pytest.mark.parametrize("policy", EXAMPLE_POLICIES)
def test_metrics_are_sane(reports: dict[str, PolicyReport], policy: str) -> None:
    report = reports[policy]
    run, m = report.run, report.summary["metrics"]
    for j, job in enumerate(run.jobs):
        jct = run.finish[j] - job.submit
        assert jct >= job.run_s - 1e-9, job  # never faster than its own run
        assert run.first_start[j] >= job.submit
        assert jct - run.ran[j] >= -1e-9  # waits are not negative
    for name in ("gpu_utilization", "cpu_utilization", "memory_utilization"):
        assert 0 < m[name] <= 1, name
    for name in ("jain", "jain_gpu", "jain_contended"):
        assert 0 < m[name] <= 1, name
    assert m["jct_p50_s"] <= m["jct_p99_s"] and m["wait_p50_s"] <= m["wait_p99_s"]
    assert m["makespan_s"] >= max(j.run_s for j in run.jobs)
    assert 0 < m["rho_mean"] <= m["rho_max"] and math.isfinite(m["rho_max"])
    # A quarter of the 5 GPU nodes rounds to 1: 2-node gangs fall back to scaling.
    assert m["isolated_fallbacks"] < 0.05 * len(run.jobs)
    shares = [t["gpu_share"] for t in report.summary["tenants"].values()]
    assert sum(shares) == pytest.approx(1.0)


@pytest.mark.parametrize("policy", EXAMPLE_POLICIES)
def test_never_over_capacity(reports: dict[str, PolicyReport], policy: str) -> None:
    run = reports[policy].run
    _, _, held, allocated = run.timeline.arrays()
    for p, pool in enumerate(run.cluster.pools):
        cap = pool.capacity
        assert (allocated[:, p, :] <= np.array([cap.cpu_milli, cap.memory, cap.gpu])).all()
    assert (held >= 0).all() and (allocated >= 0).all()


def test_the_policies_differ_as_expected(reports: dict[str, PolicyReport]) -> None:
    wait = {name: r.summary["metrics"]["wait_mean_s"] for name, r in reports.items()}
    assert wait["fairshare-backfill"] < wait["fifo"] / 2  # backfill fills the holes
    assert reports["fifo"].summary["metrics"]["preemptions"] == 0
    preempting = reports["fairshare-backfill-preemption"].summary["metrics"]
    assert preempting["preemptions"] > 0 and preempting["lost_gpu_hours"] > 0


@pytest.mark.parametrize("policy", ["fifo", "fairshare-backfill"])
def test_skipping_passes_changes_nothing(
    example: tuple[list[TraceJob], ClusterSpec],
    reports: dict[str, PolicyReport],
    policy: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The skip test only saves passes that would admit nothing: results are identical."""
    jobs, spec = example
    monkeypatch.setattr(FreeRoom, "could_admit", lambda *args: True)
    every = simulate(jobs, spec, example_policy(policy))
    skipping = reports[policy].run
    assert every.skipped == 0 and skipping.skipped > 0
    assert every.first_start == skipping.first_start
    assert every.finish == skipping.finish


def _json(jobs: list[TraceJob], spec: ClusterSpec, policy: str) -> str:
    done = run_policies(jobs, spec, [example_policy(policy)], isolation=Isolation.SIMULATE)
    doc: dict[str, Any] = report_json(trace_info(jobs), spec, done, Isolation.SIMULATE)
    return json.dumps(doc, indent=2)


def test_same_input_same_json(
    example: tuple[list[TraceJob], ClusterSpec], reports: dict[str, PolicyReport]
) -> None:
    jobs, spec = example
    first = _json(jobs, spec, "fairshare-backfill")
    assert _json(jobs, spec, "fairshare-backfill") == first
    doc = report_json(trace_info(jobs), spec, [reports["fairshare-backfill"]], Isolation.SIMULATE)
    assert json.dumps(doc, indent=2) == first
