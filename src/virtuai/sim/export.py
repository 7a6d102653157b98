"""A live cluster's own history as a trace and a cluster file (``virtuai sim export``).

An operator who wants to switch the live scheduler to another policy replays what the
cluster really ran, on what it really has, before switching.  The CLI fetches the
server's JSON (``/api/v1/jobs``, ``nodes``, ``tenants``, ``priority-classes``); this
module turns it into the simulator's ``TraceJob``s and ``ClusterSpec``, with no I/O:

- **jobs**: the batch jobs submitted in the window that ran and ended (succeeded,
  failed, timed out, cancelled or preempted after starting), on this platform's own
  machines (site ``local``).  Each keeps its tenant, per-task resources, tasks, time
  limit, priority class and pool; its duration is from its (first) start to its end,
  which for a job preempted and requeued also counts the time it waited in between.
  Left out, and counted in ``Export.left_out``: jobs that never started, jobs still
  running or waiting, notebooks and services (they run until stopped), jobs of
  virtual clusters, jobs offloaded to Slurm sites (other schedulers placed them), and
  jobs on nodes or of pools that are gone (a trace row naming a pool the cluster file
  lacks is an error in ``virtuai sim``);
- **nodes**: the ``local`` site's nodes, one pool per server pool; a pool whose nodes
  differ in size becomes one pool per size (``gpu``, ``gpu-2`` ...) and jobs lose their
  pool restriction to it (the simulator's pools are of identical nodes);
- **tenants**: weights, cohorts and quotas (tenant-wide and per pool, nominal,
  borrowing and lending limits) as the server holds them now;
- **priority classes**: the server's.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from virtuai.domain.resources import Resources
from virtuai.domain.sites import LOCAL_SITE
from virtuai.domain.tenancy import ANY_POOL, PoolQuota, Quota
from virtuai.domain.units import MILLI
from virtuai.domain.workload import FINISHED_STATES, PriorityClass, WorkloadKind
from virtuai.sim.cluster import ClusterSpec, PoolSpec, TenantSpec
from virtuai.sim.trace import TraceJob

__all__ = ["ENDED", "Export", "export"]

JsonObject = Mapping[str, Any]
# Ended (``preempted``: preempted and not requeued, ``--no-requeue``); those that ran.
ENDED = frozenset(state.value for state in FINISHED_STATES)
BATCH = WorkloadKind.JOB.value
DEFAULT_CLASS = "normal"


@dataclass
class Export:
    """What ``export`` made, and why the rest was left out (reason -> jobs)."""

    jobs: list[TraceJob]
    cluster: ClusterSpec
    left_out: Counter[str] = field(default_factory=Counter)


def export(
    jobs: Iterable[JsonObject],
    nodes: Sequence[JsonObject],
    tenants: Sequence[JsonObject],
    classes: Sequence[JsonObject],
    *,
    since: dt.datetime,
    name: str = "live",
) -> Export:
    """The jobs submitted at or after ``since`` as a trace, on the cluster of ``nodes``."""
    cluster, pool_of_node, renamed = _cluster(nodes, tenants, classes, name)
    remote = {str(n["name"]) for n in nodes if n.get("site", LOCAL_SITE) != LOCAL_SITE}
    left_out: Counter[str] = Counter()
    kept: list[tuple[float, JsonObject]] = []
    for job in jobs:
        submitted = _when(job.get("submitted_at"))
        if submitted is None or submitted < since:
            continue
        why = _left_out(job, pool_of_node, renamed, remote)
        if why is not None:
            left_out[why] += 1
            continue
        kept.append((submitted.timestamp(), job))
    first = min((t for t, _ in kept), default=0.0)
    out = []
    for submitted_s, job in sorted(kept, key=lambda k: (k[0], int(k[1]["id"]))):
        out.append(_trace_job(job, submitted_s - first, renamed, cluster.priority_classes))
    return Export(out, cluster, left_out)


# -- jobs ----------------------------------------------------------------------------------


def _left_out(
    job: JsonObject,
    pool_of_node: Mapping[str, str],
    pools: Mapping[str, str | None],
    remote: set[str],
) -> str | None:
    """Why ``job`` is not replayed, or ``None``."""
    if job.get("kind", BATCH) != BATCH:
        return f"{job['kind']}s (they run until stopped)"
    if job.get("vc"):
        return "jobs of virtual clusters"
    if job.get("state") not in ENDED:
        return "jobs not ended yet"
    if _when(job.get("started_at")) is None or _when(job.get("finished_at")) is None:
        return "jobs that never started"
    placed = [p.get("node") for p in job.get("placement") or []]
    offloaded = (job.get("site") or LOCAL_SITE) != LOCAL_SITE or any(n in remote for n in placed)
    if offloaded or not placed:
        return "jobs offloaded to Slurm sites"
    if any(node not in pool_of_node for node in placed):
        return "jobs on nodes that are gone"
    if job.get("pool") and job["pool"] not in pools:  # its nodes moved to other pools
        return "jobs of pools that are gone"
    return None


def _trace_job(
    job: JsonObject,
    submit: float,
    renamed: Mapping[str, str | None],
    classes: Mapping[str, PriorityClass],
) -> TraceJob:
    started, finished = _when(job["started_at"]), _when(job["finished_at"])
    assert started is not None and finished is not None
    resources = job.get("resources") or {}
    limit = job.get("time_limit")
    pool = job.get("pool")
    # A class deleted since the job ran: the default class's value.
    priority = classes.get(str(job.get("priority") or "")) or classes.get(
        DEFAULT_CLASS, PriorityClass(DEFAULT_CLASS, 500)
    )
    return TraceJob(
        id=str(job["id"]),
        submit=submit,
        duration=max(0.0, (finished - started).total_seconds()),
        walltime=float(limit) if limit else math.inf,
        tenant=str(job["tenant"]),
        per_task=Resources(
            round(float(resources.get("cpu") or 0) * MILLI),
            int(resources.get("memory") or 0),
            int(resources.get("gpu") or 0),
        ),
        tasks=int(job.get("tasks") or 1),
        priority=priority.value,
        pool=renamed.get(pool, pool) if pool else None,
        preemptible=priority.preemptible,
    )


def _when(raw: object) -> dt.datetime | None:
    if not raw:
        return None
    stamp = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=dt.UTC)


# -- the cluster ---------------------------------------------------------------------------


def _cluster(
    nodes: Sequence[JsonObject],
    tenants: Sequence[JsonObject],
    classes: Sequence[JsonObject],
    name: str,
) -> tuple[ClusterSpec, dict[str, str], dict[str, str | None]]:
    """The cluster; each local node's (simulated) pool; the server pools renamed (a pool
    split by node size maps to ``None``: its jobs may run in any of its parts)."""
    by_pool: dict[str, dict[tuple[int, int, int, str, int], list[str]]] = {}
    for node in nodes:
        if node.get("site", LOCAL_SITE) != LOCAL_SITE:
            continue
        cap = node.get("capacity") or {}
        gpus = node.get("gpus") or []
        size = (
            round(float(cap.get("cpu") or 0) * MILLI),
            int(cap.get("memory") or 0),
            int(cap.get("gpu") or 0),
            str(gpus[0].get("model") or "gpu") if gpus else "gpu",
            int(gpus[0].get("memory") or 0) if gpus else 0,
        )
        by_pool.setdefault(str(node["pool"]), {}).setdefault(size, []).append(str(node["name"]))
    pools: list[PoolSpec] = []
    pool_of_node: dict[str, str] = {}
    renamed: dict[str, str | None] = {}
    for pool, sizes in sorted(by_pool.items()):
        # The most common size keeps the pool's name.
        ordered = sorted(sizes.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        renamed[pool] = pool if len(ordered) == 1 else None
        for k, ((cpu, memory, gpu, model, gpu_memory), names) in enumerate(ordered, start=1):
            part = pool if k == 1 else f"{pool}-{k}"
            pools.append(PoolSpec(part, len(names), cpu, memory, gpu, model, gpu_memory))
            pool_of_node.update(dict.fromkeys(names, part))
    known = {p.name for p in pools}
    specs = tuple(_tenant(t, known) for t in tenants)
    priority = {
        str(c["name"]): PriorityClass(
            str(c["name"]), int(c["value"]), bool(c.get("preemptible", True))
        )
        for c in classes
    }
    cluster = ClusterSpec(name, tuple(pools), specs)
    if priority:
        cluster = replace(cluster, priority_classes=priority)
    return cluster, pool_of_node, renamed


def _tenant(tenant: JsonObject, pools: set[str]) -> TenantSpec:
    entries = {str(q["pool"]): q for q in tenant.get("quotas") or []}
    whole = entries.get(ANY_POOL)
    own = tuple(
        PoolQuota(
            pool,
            _quota(q.get("nominal")),
            _quota(q.get("borrowing_limit")),
            _quota(q.get("lending_limit")),
        )
        for pool, q in sorted(entries.items())
        if pool in pools  # a quota on a Slurm site's pool has no nodes here
    )
    return TenantSpec(
        str(tenant["name"]),
        _quota(tenant.get("quota")),
        float(tenant.get("weight") or 1.0),
        tenant.get("cohort") or None,
        _quota(whole.get("borrowing_limit")) if whole else Quota(),
        _quota(whole.get("lending_limit")) if whole else Quota(),
        own,
    )


def _quota(limits: JsonObject | None) -> Quota:
    if not limits:
        return Quota()
    cpu, memory, gpu = limits.get("cpu"), limits.get("memory"), limits.get("gpu")
    return Quota(
        None if cpu is None else round(float(cpu) * MILLI),
        None if memory is None else int(memory),
        None if gpu is None else int(gpu),
    )
