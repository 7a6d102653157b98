"""``virtuai sim export``'s mapping: the server's JSON (jobs, nodes, tenants, priority
classes) into a trace and a cluster file that replay what the cluster ran."""

from __future__ import annotations

import datetime as dt
import io
import math
from dataclasses import replace
from typing import Any

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import PoolQuota, Quota
from virtuai.sim.cluster import parse_cluster
from virtuai.sim.engine import simulate
from virtuai.sim.export import export
from virtuai.sim.policy import example_policy
from virtuai.sim.trace import parse_trace, write_trace

Gi = 2**30
T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat()


def node(name: str, pool: str, cpu: float, memory: int, gpus: int = 0, site: str = "local") -> Any:
    return {
        "name": name,
        "site": site,
        "pool": pool,
        "capacity": {"cpu": cpu, "memory": memory, "gpu": gpus},
        "gpus": [
            {"index": i, "model": "A100", "memory": 40 * Gi, "busy": False} for i in range(gpus)
        ],
    }


def job(id: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": id,
        "tenant": "physics",
        "kind": "job",
        "state": "succeeded",
        "resources": {"cpu": 0.5, "memory": Gi, "gpu": 0},
        "tasks": 1,
        "time_limit": None,
        "priority": "normal",
        "pool": None,
        "site": None,
        "vc": None,
        "placement": [{"index": 0, "node": "cpu-a", "gpu_indices": []}],
        "submitted_at": at(0),
        "started_at": at(10),
        "finished_at": at(70),
    }
    return {**base, **fields}


NODES = [
    node("cpu-a", "default", 8, 32 * Gi),
    node("cpu-b", "default", 8, 32 * Gi),
    node("gpu-4", "gpu", 32, 128 * Gi, 4),
    node("gpu-8", "gpu", 32, 256 * Gi, 8),  # another size: the pool is split
    node("hpc-1", "hpc:batch", 64, 256 * Gi, site="hpc"),  # a Slurm site's: not ours
]
LIMITS = {"cpu": None, "memory": None, "gpu": None}
TENANTS = [
    {
        "name": "physics",
        "quota": {"cpu": 16.0, "memory": 64 * Gi, "gpu": 4},
        "weight": 1.0,
        "cohort": "science",
        "quotas": [
            {
                "pool": "*",
                "nominal": {"cpu": 16.0, "memory": 64 * Gi, "gpu": 4},
                "borrowing_limit": {**LIMITS, "gpu": 2},
                "lending_limit": LIMITS,
            },
            {
                "pool": "gpu",
                "nominal": {**LIMITS, "gpu": 4},
                "borrowing_limit": LIMITS,
                "lending_limit": LIMITS,
            },
            {  # a Slurm site's pool: no nodes of it are replayed
                "pool": "hpc:batch",
                "nominal": {**LIMITS, "cpu": 64.0},
                "borrowing_limit": LIMITS,
                "lending_limit": LIMITS,
            },
        ],
    },
    {"name": "biology", "quota": LIMITS, "weight": 2.0, "cohort": None, "quotas": []},
]
CLASSES = [
    {"name": "urgent", "value": 2000, "preemptible": False},
    {"name": "normal", "value": 500, "preemptible": True},
]


def test_ended_batch_jobs_of_the_window_become_the_trace() -> None:
    jobs = [
        job(1, tasks=2, time_limit=120, priority="urgent", pool="default"),
        job(
            2,
            tenant="biology",
            state="failed",
            resources={"cpu": 4.0, "memory": 16 * Gi, "gpu": 2},
            pool="gpu",  # split by node size: the replay lets it run in either part
            placement=[{"index": 0, "node": "gpu-8", "gpu_indices": [0, 1]}],
            submitted_at=at(5),
            started_at=at(6),
            finished_at=at(3606),
        ),
        job(3, kind="notebook"),
        job(4, state="pending", started_at=None, finished_at=None, placement=[]),
        job(5, state="cancelled", started_at=None),
        job(6, pool="hpc:batch", site="hpc", placement=[]),
        job(11, placement=[{"index": 0, "node": "hpc-1", "gpu_indices": []}]),  # sent there
        job(7, vc="lab"),
        job(8, placement=[{"index": 0, "node": "retired", "gpu_indices": []}]),
        job(12, pool="bigmem"),  # its node is in another pool now: no pool bigmem left
        job(9, submitted_at=at(-7200)),  # before the window: not counted at all
        job(
            10,
            state="timed_out",
            priority="gone",
            submitted_at=at(30),
            started_at=at(40),
            finished_at=at(100),
        ),
    ]
    found = export(jobs, NODES, TENANTS, CLASSES, since=T0 - dt.timedelta(hours=1))
    got = [(j.id, j.submit, j.duration, j.tenant, j.tasks, j.pool) for j in found.jobs]
    assert got == [
        ("1", 0.0, 60.0, "physics", 2, "default"),
        ("2", 5.0, 3600.0, "biology", 1, None),
        ("10", 30.0, 60.0, "physics", 1, None),
    ]
    first, second, third = found.jobs
    assert (first.walltime, first.priority, first.preemptible) == (120.0, 2000, False)
    assert math.isinf(second.walltime)
    assert second.per_task == Resources(4000, 16 * Gi, 2)
    assert (third.priority, third.preemptible) == (500, True)  # its class was deleted
    assert found.left_out == {
        "notebooks (they run until stopped)": 1,
        "jobs not ended yet": 1,
        "jobs that never started": 1,
        "jobs offloaded to Slurm sites": 2,
        "jobs of virtual clusters": 1,
        "jobs on nodes that are gone": 1,
        "jobs of pools that are gone": 1,
    }


def test_the_cluster_is_the_local_nodes_tenants_and_classes() -> None:
    cluster = export([], NODES, TENANTS, CLASSES, since=T0, name="lab").cluster
    pools = [(p.name, p.count, p.cpu_milli, p.memory, p.gpus, p.gpu_model) for p in cluster.pools]
    assert pools == [
        ("default", 2, 8000, 32 * Gi, 0, "gpu"),
        ("gpu", 1, 32000, 128 * Gi, 4, "A100"),
        ("gpu-2", 1, 32000, 256 * Gi, 8, "A100"),
    ]
    physics, biology = cluster.tenants
    assert (physics.quota, physics.cohort, physics.borrowing_limit) == (
        Quota(16000, 64 * Gi, 4),
        "science",
        Quota(gpu=2),
    )
    assert physics.pool_quotas == (PoolQuota("gpu", Quota(gpu=4)),)
    assert (biology.quota, biology.weight, biology.cohort) == (Quota(), 2.0, None)
    assert {c.name: (c.value, c.preemptible) for c in cluster.priority_classes.values()} == {
        "urgent": (2000, False),
        "normal": (500, True),
    }
    # The files written read back the same, and replay.
    assert parse_cluster(cluster.to_yaml(), "lab.yaml") == cluster


def test_the_written_trace_reads_back_and_replays() -> None:
    jobs = [
        job(1, priority="urgent", time_limit=30),  # ran 60 s: it times out in the replay too
        job(2, tenant="biology", submitted_at=at(1), started_at=at(100), finished_at=at(400)),
    ]
    found = export(jobs, NODES, TENANTS, CLASSES, since=T0)
    buffer = io.StringIO()
    write_trace(found.jobs, buffer, found.cluster.priority_classes)
    again = parse_trace(io.StringIO(buffer.getvalue()), "trace.csv", found.cluster.priority_classes)
    assert [replace(j, line=0) for j in again] == found.jobs
    run = simulate(again, found.cluster, example_policy("las-fairshare"))
    assert run.finish == [30.0, 301.0]  # no queueing on the cluster: both start at once
