"""The replay's timeline, kept as changes: what it reads back, and what it costs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_builders import cluster, job, pool

from virtuai.sim.cluster import TenantSpec
from virtuai.sim.engine import simulate
from virtuai.sim.metrics import summarize
from virtuai.sim.philly import philly_cluster, philly_trace
from virtuai.sim.plots import TENANTS_DRAWN, plot_run, tenant_bands
from virtuai.sim.policy import example_policy
from virtuai.sim.timeline import Timeline

TENANTS, POOLS = 4, 2

# A sample: its time step (0: the same time as the last one), then the changes it records.
samples = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 1.0, 7.0]),
        st.lists(
            st.tuples(
                st.integers(0, TENANTS - 1), *[st.integers(0, 9)] * 4
            )  # tenant, waiting, cpu, memory, gpu
        ),
        st.lists(st.tuples(st.integers(0, POOLS - 1), *[st.integers(0, 9)] * 3)),
    ),
    max_size=12,
)


def _rows(recorded: list[tuple[float, list[tuple[int, ...]], list[tuple[int, ...]]]]) -> tuple[
    list[float], list[list[int]], list[list[int]]
]:  # fmt: skip
    """What the timeline used to keep: every tenant's and pool's numbers at every sample."""
    times: list[float] = []
    tenant_rows: list[list[int]] = []
    pool_rows: list[list[int]] = []
    tenants, pools = [0] * (TENANTS * 4), [0] * (POOLS * 3)
    t = 0.0
    for step, changed, pool_changes in recorded:
        t += step
        for who, *values in changed:
            tenants[who * 4 : who * 4 + 4] = values
        for who, *values in pool_changes:
            pools[who * 3 : who * 3 + 3] = values
        if times and times[-1] == t:
            tenant_rows.pop()
            pool_rows.pop()
        else:
            times.append(t)
        tenant_rows.append(list(tenants))
        pool_rows.append(list(pools))
    return times, tenant_rows, pool_rows


@settings(max_examples=200, deadline=None)
@given(samples)
def test_the_changes_read_back_as_the_rows_they_replace(
    recorded: list[tuple[float, list[tuple[int, ...]], list[tuple[int, ...]]]],
) -> None:
    timeline = Timeline([f"t{i}" for i in range(TENANTS)], [f"p{i}" for i in range(POOLS)])
    t = 0.0
    for step, changed, pool_changes in recorded:
        t += step
        timeline.record(t, changed, pool_changes)
    times, tenant_rows, pool_rows = _rows(recorded)
    k = len(times)
    dense = np.array(tenant_rows, dtype=np.int64).reshape(k, TENANTS, 4)
    pools = np.array(pool_rows, dtype=np.int64).reshape(k, POOLS, 3)

    got_times, waiting, held, allocated = timeline.arrays()
    assert list(got_times) == times
    assert (waiting == dense[:, :, 0]).all() and (held == dense[:, :, 1:]).all()
    assert (allocated == pools).all()

    # Sums over tenants per sample, and each tenant's integral over time.
    steps = timeline.tenant_steps()
    assert steps.per_sample(lambda v: v[:, 3]).tolist() == dense[:, :, 3].sum(axis=1).tolist()
    among = np.array([True, False, True, False])
    expected = dense[:, among, 0].sum(axis=1)
    assert steps.per_sample(lambda v: v[:, 0], among).tolist() == (expected.tolist())
    durations = np.diff(np.append(times, times[-1] + 3.0)) if k else np.zeros(0)
    measure = np.concatenate([[0.0], np.cumsum(durations)])
    integral = steps.integral(steps.values[:, 3], measure)
    assert integral.tolist() == (dense[:, :, 3] * durations[:, None]).sum(axis=0).tolist()


def test_a_timeline_grows_with_what_changes_not_with_the_tenants_declared() -> None:
    """A trace of a thousand users (PAI's) kept a number per tenant at every event: tens
    of GB for a whole trace.  Tenants that never change cost nothing now."""
    nodes = philly_cluster(4)
    jobs = philly_trace(nodes, 400, seed=2, load=1.2)
    idle = tuple(TenantSpec(f"idle{k}") for k in range(2_000))
    crowded = dataclasses.replace(nodes, tenants=nodes.tenants + idle)
    policy = example_policy("fairshare-backfill")
    alone, among_many = simulate(jobs, nodes, policy), simulate(jobs, crowded, policy)
    assert len(among_many.timeline.tenants) == len(alone.timeline.tenants) + 2_000
    assert among_many.finish == alone.finish
    assert among_many.timeline.nbytes == alone.timeline.nbytes
    # At most a tenant and a pool change per job start, end and submission.
    per_change = 8 + 8 + 4 * 8
    assert alone.timeline.nbytes <= len(alone.timeline) * 8 + 3 * len(jobs) * 2 * per_change
    a, b = summarize(alone)["metrics"], summarize(among_many)["metrics"]
    assert a == b


def test_a_replay_of_many_tenants_is_drawn_with_the_biggest_and_the_rest(tmp_path: Path) -> None:
    tenants = 30
    jobs = [
        job(f"j{k}", k, 100 + 10 * k, tenant=f"u{k}", cpu=1, gpus=1 + k % 3) for k in range(tenants)
    ]
    run = simulate(jobs, cluster(pool(count=4, cpu=16, gpus=8)))
    bands, masks = tenant_bands(run)
    assert len(bands) == TENANTS_DRAWN
    assert bands[-1] == sorted(bands[-1]) and len(bands[-1]) == tenants - TENANTS_DRAWN + 1
    # The ones drawn alone held the largest share (GPUs here): the longest 3-GPU jobs.
    gpu_hours = summarize(run)["tenants"]
    alone = {band[0] for band in bands[:-1]}
    least_alone = min(gpu_hours[name]["gpu_hours"] for name in alone)
    assert all(gpu_hours[name]["gpu_hours"] <= least_alone for name in bands[-1])
    assert sum(int(m.sum()) for m in masks) == tenants
    paths = plot_run(run, tmp_path, "many")
    assert [p.name for p in paths] == ["many-queue.png", "many-utilization.png", "many-share.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert not math.isnan(summarize(run)["metrics"]["jain"])
