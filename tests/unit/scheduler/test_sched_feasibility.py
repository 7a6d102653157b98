"""never_runs_reason: the words the API refuses a request with, and when it says nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sched_builders import Gi, job, node

from virtuai.domain.tenancy import Quota
from virtuai.scheduler import never_runs_reason
from virtuai.scheduler.snapshot import PendingJob

NODES = [
    node("small", cpu=4, memory=int(31.2 * Gi), pool="cpu"),
    node("gpu-a", cpu=16, memory="64Gi", gpus=2, pool="gpu"),
    node("gpu-b", cpu=16, memory="64Gi", gpus=2, pool="gpu"),
]
NO_QUOTA = Quota()


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (
            job("m", memory="64Gi", pool="cpu"),
            "asks for 64Gi memory per task but the largest node in pool cpu has 31.2Gi",
        ),
        (job("m", memory="128Gi"), "asks for 128Gi memory per task but the largest node has 64Gi"),
        (job("c", cpu=32), "asks for 32 cpu per task but the largest node has 16"),
        (job("c", cpu="500m", gpu=4), "asks for 4 gpu per task but the largest node has 2"),
        (
            job("c", cpu=1, gpu=1, pool="cpu"),
            "asks for 1 gpu per task but the largest node in pool cpu has 0",
        ),
        (
            job("g", cpu=16, memory="40Gi", gpu=2, tasks=3),
            "needs 3 tasks of cpu=16 memory=40Gi gpu=2 but even when idle the nodes hold only 2 "
            "such tasks",
        ),
        (job("p", pool="fat"), "asks for pool fat but it has no nodes"),
        (job("z", tasks=0), "asks for 0 tasks; a job needs at least 1"),
    ],
)
def test_node_limits(request_: PendingJob, reason: str) -> None:
    assert never_runs_reason(request_, NODES, NO_QUOTA, "physics") == reason


def test_no_single_node_has_all_of_a_task() -> None:
    nodes = [node("cpu-heavy", cpu=64, memory="8Gi"), node("mem-heavy", cpu=2, memory="512Gi")]
    assert never_runs_reason(job("j", cpu=32, memory="64Gi"), nodes, NO_QUOTA, "t") == (
        "asks for cpu=32 memory=64Gi per task but no single node has all of that"
    )


def test_no_nodes_at_all() -> None:
    assert never_runs_reason(job("j"), [], NO_QUOTA, "t") == "there are no nodes"


@pytest.mark.parametrize(
    ("quota", "reason"),
    [
        (Quota(gpu=2), "needs 4 gpu in total but tenant physics has a quota of 2 gpu"),
        (Quota(cpu_milli=1500), "needs 2 cpu in total but tenant physics has a quota of 1.5 cpu"),
        (
            Quota(memory=3 * Gi, gpu=2),
            "needs 4Gi memory in total but tenant physics has a quota of 3Gi memory",
        ),
    ],
)
def test_quota_limits(quota: Quota, reason: str) -> None:
    request_ = job("j", cpu=1, memory="2Gi", gpu=2, tasks=2)
    assert never_runs_reason(request_, NODES, quota, "physics") == reason


@pytest.mark.parametrize(
    "request_",
    [
        job("one", cpu=16, memory="64Gi", gpu=2),
        job("gang", cpu=16, memory="64Gi", gpu=2, tasks=2),
        job("spread", cpu=1, tasks=36),  # 4 + 16 + 16 single-cpu tasks
        job("zero", cpu=0, memory=0),
    ],
)
def test_jobs_that_fit_idle_nodes_get_no_reason(request_: PendingJob) -> None:
    assert never_runs_reason(request_, NODES, Quota(cpu_milli=64_000, gpu=4), "physics") is None


def test_gpus_without_devices_cannot_be_handed_out() -> None:
    # capacity.gpu says 2, but no GpuDevice exists to put in CUDA_VISIBLE_DEVICES.
    bare = replace(node("bare", gpus=2), gpus=())
    assert never_runs_reason(job("j", gpu=1), [bare], NO_QUOTA, "t") == (
        "asks for 1 gpu per task but the largest node has 0"
    )
