"""Fair share through the real scheduler: equal tenants that saturate the cluster share it equally.

Four tenants of equal weight each submit, at time 0, a backlog worth the same
GPU-time (8 GPUs for about 6 hours) but cut differently: one in many short 1-GPU
jobs, one in long ones, one in 2-GPU jobs, one in 4-GPU jobs.  Tenant ``a``'s
jobs come first in the file.  While every tenant still has work waiting (the
*contended* time), fair share must give each about a quarter of the GPU-time;
FIFO gives it all to ``a``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from virtuai.domain.resources import Resources
from virtuai.sim.cluster import ClusterSpec, PoolSpec, TenantSpec
from virtuai.sim.engine import simulate
from virtuai.sim.metrics import summarize
from virtuai.sim.policy import example_policy
from virtuai.sim.trace import TraceJob

Gi = 2**30
TENANTS = {"a": (1, 300.0), "b": (1, 2400.0), "c": (2, 900.0), "d": (4, 1200.0)}  # gpus, duration
GPU_SECONDS = 8 * 6 * 3600.0  # each tenant's backlog
CLUSTER = ClusterSpec(
    "fair-test",
    (PoolSpec("gpu", 4, 64_000, 512 * Gi, 8, "A100", 80 * Gi),),
    tuple(TenantSpec(name) for name in TENANTS),
)


def backlog() -> list[TraceJob]:
    jobs = []
    for tenant, (gpus, duration) in TENANTS.items():
        count = round(GPU_SECONDS / (gpus * duration))
        jobs += [
            TraceJob(
                id=f"{tenant}{k}",
                submit=0.0,
                duration=duration,
                walltime=duration,
                tenant=tenant,
                per_task=Resources(gpus * 4000, gpus * 16 * Gi, gpus),
            )
            for k in range(count)
        ]
    return jobs


def contended_shares(policy_name: str) -> tuple[dict[str, float], float]:
    run = simulate(backlog(), CLUSTER, example_policy(policy_name))
    summary = summarize(run)
    assert summary["metrics"]["finished"] == len(run.jobs)
    shares = {name: t["gpu_share_contended"] for name, t in summary["tenants"].items()}
    return shares, summary["metrics"]["contended_s"]


@pytest.mark.parametrize("policy", ["fairshare", "fairshare-backfill"])
def test_fair_share_gives_equal_tenants_equal_gpu_time(policy: str) -> None:
    shares, contended_s = contended_shares(policy)
    assert contended_s > 4 * 3600  # nearly all of the 6 hours
    for tenant, share in shares.items():
        assert share == pytest.approx(1 / len(TENANTS), rel=0.10), (tenant, shares)


def test_fifo_does_not() -> None:
    shares, _ = contended_shares("fifo")
    assert shares["a"] > 0.9  # first in the file, it takes the whole cluster


def test_weights_set_the_shares() -> None:
    weights = {"a": 1, "b": 1, "c": 2, "d": 4}
    weighted = replace(CLUSTER, tenants=tuple(TenantSpec(n, weight=w) for n, w in weights.items()))
    summary = summarize(simulate(backlog(), weighted, example_policy("fairshare")))
    assert summary["metrics"]["jain_contended"] == pytest.approx(1.0, abs=0.01)
    for name, tenant in summary["tenants"].items():
        expected = weights[name] / sum(weights.values())
        assert tenant["gpu_share_contended"] == pytest.approx(expected, rel=0.10), name
