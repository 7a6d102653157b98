"""Metrics on a replay small enough to work out by hand."""

from __future__ import annotations

import pytest
from sim_builders import cluster, job, pool

from virtuai.sim.engine import SimRun, simulate
from virtuai.sim.isolated import Isolation, isolated_jct
from virtuai.sim.metrics import jain, summarize


def test_jain_index() -> None:
    assert jain([3, 3, 3]) == pytest.approx(1.0)
    assert jain([1, 0, 0]) == pytest.approx(1 / 3)
    assert jain([600, 200]) == pytest.approx(0.8)
    assert jain([]) is None
    assert jain([0, 0]) is None


def small_run() -> SimRun:
    # One node, 8 CPUs and 4 GPUs.  a1 and b1 (2 GPUs each) run at once from 0 to 100;
    # a2 (the whole node) waits for them and runs from 100 to 200.
    jobs = [
        job("a1", 0, 100, tenant="a", cpu=4, gpus=2),
        job("b1", 0, 100, tenant="b", cpu=4, gpus=2),
        job("a2", 0, 100, tenant="a", cpu=8, gpus=4),
    ]
    return simulate(jobs, cluster(pool(cpu=8, memory="64Gi", gpus=4)))


def test_times_utilization_and_fairness() -> None:
    run = small_run()
    m = summarize(run)["metrics"]
    assert m["finished"] == 3 and m["rejected"] == 0 and m["unfinished"] == 0
    assert m["jct_mean_s"] == pytest.approx(400 / 3)
    assert m["jct_p50_s"] == 100 and m["jct_p99_s"] == pytest.approx(198)
    assert m["wait_mean_s"] == pytest.approx(100 / 3) and m["wait_p50_s"] == 0
    assert m["bounded_slowdown_mean"] == pytest.approx(4 / 3)
    assert m["makespan_s"] == 200
    assert m["gpu_utilization"] == pytest.approx(1.0)
    assert m["cpu_utilization"] == pytest.approx(1.0)
    # GPU-time: a 600, b 200.  Dominant-share time: a 0.5*100 + 1*100 = 150, b 50.
    assert m["jain_gpu"] == pytest.approx(0.8)
    assert m["jain"] == pytest.approx(0.8)
    assert m["jain_contended"] is None and m["contended_s"] == 0  # b never waited
    assert m["rho_mean"] is None  # no isolated estimate given


def test_per_tenant_and_per_pool() -> None:
    summary = summarize(small_run())
    a, b = summary["tenants"]["a"], summary["tenants"]["b"]
    assert a["gpu_hours"] == pytest.approx(600 / 3600) and b["gpu_hours"] == pytest.approx(
        200 / 3600
    )
    assert a["gpu_share"] == pytest.approx(0.75) and b["gpu_share"] == pytest.approx(0.25)
    assert a["jobs"] == 2 and a["jct_mean_s"] == pytest.approx(150)
    assert summary["pools"]["gpu"]["gpu_utilization"] == pytest.approx(1.0)


@pytest.mark.parametrize("method", [Isolation.SIMULATE, Isolation.SCALE])
def test_finish_time_fairness(method: Isolation) -> None:
    run = small_run()
    iso, fallbacks = isolated_jct(run, method)
    # Each tenant's half of one node rounds up to the whole node: alone, a2 still
    # waits for a1 (simulate), or is slowed to fit half the cluster (scale).
    assert iso == [100, 100, 200] and fallbacks == 0
    m = summarize(run, iso)["metrics"]
    assert (m["rho_mean"], m["rho_max"]) == (pytest.approx(1.0), pytest.approx(1.0))


def test_rho_falls_back_to_scaling_when_the_slice_is_too_small() -> None:
    jobs = [job("wide", 0, 100, tenant="a", gpus=4, tasks=2), job("b", 0, 50, tenant="b")]
    run = simulate(jobs, cluster(pool(count=2, cpu=8, gpus=4)))
    iso, fallbacks = isolated_jct(run)
    # The gang needs both nodes, half the cluster has one: it would run at half speed.
    assert fallbacks == 1 and iso == [200, 50]
