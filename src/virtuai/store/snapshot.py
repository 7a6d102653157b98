"""The scheduler's view of the world, read from the database.

Shared by the scheduling loop (to decide) and by the API (to plan and to show
fair share), so that what users are told is computed exactly as decided.

Virtual clusters are gangs to the scheduler: one waiting for admission is a
``PendingJob`` with one task per node, an admitted one a ``RunningJob`` that
cannot be preempted, both with the id ``vc-<row id>``.  Jobs inside a cluster
are not in this snapshot at all (``control/vcjobs.py`` schedules them onto
the cluster's own nodes).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.domain.tenancy import Quota
from virtuai.domain.vcluster import VcState, vc_job_id, vnode_hostname
from virtuai.domain.workload import FINISHED_STATES
from virtuai.scheduler.las import gpu_weight
from virtuai.scheduler.snapshot import (
    HistoricalUsage,
    NodeState,
    PendingJob,
    Policy,
    RunningJob,
    Snapshot,
    TenantState,
)
from virtuai.store.inventory import (
    HOLDING_STATES,
    allowed_nodes,
    load_node_states,
    placement_from_json,
    platform_job_holds,
    vc_holds,
)
from virtuai.store.models import JobRow, NodeRow, TenantRow, UsageRow, VirtualClusterRow
from virtuai.store.tenancy import pool_quotas, quota_of, usage_by_tenant

VC_POOL = "vc"  # the pool of a virtual cluster's own nodes
VC_POLICY = Policy()  # strict priority-FIFO among the jobs inside a cluster


def build_snapshot(
    session: Session,
    *,
    now: dt.datetime,
    policy: Policy,
    preemptible: Mapping[str, bool],
    pending: Sequence[JobRow],
    pending_vcs: Sequence[VirtualClusterRow] = (),
    max_walltime_by_class: Mapping[str, int] | None = None,
    memo: dict[int, tuple[tuple[object, ...], PendingJob]] | None = None,
) -> Snapshot:
    """``memo``: the pending jobs converted by the last call, reused when unchanged (the
    scheduling loop keeps one across its passes; ``preemptible`` must stay the same)."""
    tenants = list(session.scalars(select(TenantRow).options(selectinload(TenantRow.quotas))))
    names = {t.id: t.name for t in tenants}
    nominated = nominated_ids(session)
    node_rows = list(session.scalars(select(NodeRow).where(NodeRow.schedulable.is_(True))))
    attained = attained_by_job(session) if policy.las_thresholds_gpu_s else {}
    waiting = []
    kept: dict[int, tuple[tuple[object, ...], PendingJob]] = {}
    for job in pending:
        allowed = _allowed(job, node_rows, max_walltime_by_class)
        # Everything the conversion reads: the row (its change counter stands for every
        # column the scheduler reads), and what this pass adds to it.
        key: tuple[object, ...] = (
            job.change_seq,
            names[job.tenant_id],
            job.id in nominated,
            allowed,
            attained.get(job.id, 0.0),
        )
        known = None if memo is None else memo.get(job.id)
        if known is not None and known[0] == key:
            converted = known[1]
        else:
            converted = replace(
                pending_job(
                    job,
                    names[job.tenant_id],
                    preemptible,
                    nominated=job.id in nominated,
                    allowed=allowed,
                ),
                attained_gpu_s=attained.get(job.id, 0.0),
                preempted_by=frozenset(str(i) for i in job.preempted_by or ()),
            )
        kept[job.id] = (key, converted)
        waiting.append(converted)
    if memo is not None:
        memo.clear()
        memo.update(kept)
    waiting += [pending_vc(vc, names[vc.tenant_id]) for vc in pending_vcs]
    return Snapshot(
        nodes=tuple(load_node_states(session)),
        tenants=tuple(tenant_states(session, tenants)),
        pending=tuple(waiting),
        running=tuple(
            replace(r, attained_gpu_s=attained.get(int(r.id), 0.0)) if attained else r
            for r in running_jobs(session, names, preemptible, now)
        ),
        now=now.timestamp(),
        policy=policy,
    )


def new_pending_views(
    session: Session,
    rows: Sequence[JobRow],
    preemptible: Mapping[str, bool],
    max_walltime_by_class: Mapping[str, int] | None = None,
) -> list[PendingJob]:
    """The scheduler's view of jobs just submitted, as ``build_snapshot`` converts them,
    without reading the rest of the world: a new job is nominated by no preemption,
    was preempted by no one and attained no service yet (what it is not is not read:
    the caller must know it new).  Its reads: tenants' names and schedulable nodes."""
    names = {i: name for i, name in session.execute(select(TenantRow.id, TenantRow.name))}
    node_rows = list(session.scalars(select(NodeRow).where(NodeRow.schedulable.is_(True))))
    return [
        replace(
            pending_job(
                job,
                names[job.tenant_id],
                preemptible,
                allowed=_allowed(job, node_rows, max_walltime_by_class),
            ),
            preempted_by=frozenset(str(i) for i in job.preempted_by or ()),
        )
        for job in rows
    ]


def _allowed(
    job: JobRow, node_rows: Sequence[NodeRow], max_walltime_by_class: Mapping[str, int] | None
) -> frozenset[str] | None:
    """The nodes ``job`` may run on (None: any), by its class, constraints and limit."""
    return allowed_nodes(
        node_rows,
        job.node_class,
        job.constraints or [],
        walltime_s=job.walltime_s,
        max_walltime_by_class=max_walltime_by_class,
    )


def tenant_states(session: Session, tenants: Sequence[TenantRow]) -> list[TenantState]:
    usage = usage_by_tenant(session)
    return [
        TenantState(
            name=t.name,
            quota=quota_of(t),
            usage=usage.get(t.id, Resources()),
            quotas=pool_quotas(t),
            cohort=t.cohort,
            weight=t.weight,
            history=history_of(t),
        )
        for t in tenants
    ]


def history_of(tenant: TenantRow) -> HistoricalUsage:
    return HistoricalUsage(
        cpu_milli_s=tenant.usage_cpu_milli_s,
        memory_s=tenant.usage_memory_s,
        gpu_s=tenant.usage_gpu_s,
        as_of=tenant.usage_as_of,
    )


def pending_job(
    job: JobRow,
    tenant: str,
    preemptible: Mapping[str, bool],
    *,
    nominated: bool = False,
    allowed: frozenset[str] | None = None,
) -> PendingJob:
    return PendingJob(
        id=str(job.id),
        tenant=tenant,
        priority=job.priority,
        submitted_at=job.submitted_at.timestamp(),
        seq=job.id,
        per_task=Resources(job.cpu_milli, job.memory, job.gpu),
        tasks=job.tasks,
        pool=job.pool,
        walltime_s=job.walltime_s,
        preemptible=preemptible.get(job.priority_class, True),
        nominated=nominated,
        allowed_nodes=allowed,
        host_ports=frozenset(() if job.host_port is None else (job.host_port,)),
    )


def attained_by_job(session: Session) -> dict[int, float]:
    """GPU-seconds (CPU-seconds / 1000 for CPU jobs: ``scheduler.las.gpu_weight``) that
    each unfinished job held in its finished attempts, from its usage records: the
    attained service of least-attained-service scheduling."""
    rows = session.execute(
        select(UsageRow.job_id, func.sum(UsageRow.wall_s), JobRow.gpu, JobRow.cpu_milli)
        .join(JobRow, JobRow.id == UsageRow.job_id)
        .where(JobRow.state.not_in(FINISHED_STATES))
        .group_by(UsageRow.job_id, JobRow.gpu, JobRow.cpu_milli)
    )
    return {
        job_id: float(wall or 0.0) * gpu_weight(gpu, cpu_milli)
        for job_id, wall, gpu, cpu_milli in rows
    }


def nominated_ids(session: Session) -> set[int]:
    """Pending jobs that jobs were preempted for: they wait for that room, not preempt more.

    ``preempted_for`` stays on a requeued victim, so the preemptor keeps its
    claim until it is admitted (or ends) even after its victims have stopped.
    """
    rows = session.scalars(
        select(JobRow.preempted_for).where(
            JobRow.preempted_for.is_not(None), JobRow.state.not_in(FINISHED_STATES)
        )
    )
    return {int(job_id) for job_id in rows if job_id is not None}


def waiting_vcs(session: Session) -> list[VirtualClusterRow]:
    """Virtual clusters in the queue: created or resumed, not admitted yet."""
    return list(
        session.scalars(
            select(VirtualClusterRow)
            .where(
                VirtualClusterRow.state.in_([s.value for s in VcState if s.waits_for_admission()])
            )
            .where(VirtualClusterRow.admitted_at.is_(None))
            .order_by(VirtualClusterRow.id)
        )
    )


def pending_vc(vc: VirtualClusterRow, tenant: str) -> PendingJob:
    """A cluster waiting for admission: a gang of one task per node, never a victim."""
    return PendingJob(
        id=vc_job_id(vc.id),
        tenant=tenant,
        priority=vc.priority,
        submitted_at=vc.requested_at.timestamp(),
        seq=vc.id,
        per_task=Resources(vc.cpu_milli, vc.memory, vc.gpu),
        tasks=vc.nodes,
        walltime_s=None,
        preemptible=False,
    )


def running_vcs(session: Session, names: Mapping[int, str], now: dt.datetime) -> list[RunningJob]:
    """Every admitted virtual cluster: it holds its nodes until suspended or deleted."""
    vcs = session.scalars(
        select(VirtualClusterRow).where(vc_holds()).order_by(VirtualClusterRow.id)
    )
    return [
        RunningJob(
            id=vc_job_id(vc.id),
            tenant=names[vc.tenant_id],
            priority=vc.priority,
            placements=tuple(placement_from_json(vc.placement)),
            started_at=(vc.admitted_at or now).timestamp(),
            expected_end=None,
            preemptible=False,
        )
        for vc in vcs
    ]


def running_jobs(
    session: Session, names: Mapping[int, str], preemptible: Mapping[str, bool], now: dt.datetime
) -> list[RunningJob]:
    """Every job and virtual cluster holding resources of the physical nodes; one admitted
    but not started yet counts from now."""
    jobs = session.scalars(select(JobRow).where(platform_job_holds()).order_by(JobRow.id))
    running = running_vcs(session, names, now)
    for job in jobs:
        started = (job.started_at or job.admitted_at or now).timestamp()
        running.append(
            RunningJob(
                id=str(job.id),
                tenant=names[job.tenant_id],
                priority=job.priority,
                placements=tuple(placement_from_json(job.placement)),
                started_at=started,
                expected_end=started + job.walltime_s,
                preemptible=preemptible.get(job.priority_class, True),
                preempting=job.state == "preempting",
                preempted_for=_preempted_for(job),
                seq=job.id,
            )
        )
    return running


def _preempted_for(job: JobRow) -> str | None:
    if job.preempted_for is not None:
        return str(job.preempted_for)
    if job.preempted_for_vc is not None:
        return vc_job_id(job.preempted_for_vc)
    return None


# -- inside a virtual cluster ---------------------------------------------------------------


def vc_snapshot(
    session: Session,
    vc: VirtualClusterRow,
    tenant: str,
    pending: Sequence[JobRow],
    now: dt.datetime,
) -> Snapshot:
    """The scheduler's view of one cluster: its nodes, its jobs, its tenant without a quota."""
    holding = list(
        session.scalars(
            select(JobRow)
            .where(JobRow.vc_id == vc.id, JobRow.state.in_(HOLDING_STATES))
            .order_by(JobRow.id)
        )
    )
    allocated: dict[str, Resources] = defaultdict(Resources)
    busy: dict[str, set[int]] = defaultdict(set)
    running = []
    for job in holding:
        placements = tuple(placement_from_json(job.placement))
        for task in placements:
            allocated[task.node] += task.resources
            busy[task.node].update(task.gpu_indices)
        started = (job.started_at or job.admitted_at or now).timestamp()
        running.append(
            RunningJob(
                id=str(job.id),
                tenant=tenant,
                priority=job.priority,
                placements=placements,
                started_at=started,
                expected_end=started + job.walltime_s,
            )
        )
    nodes = vc_nodes(session, vc)
    return Snapshot(
        nodes=tuple(NodeState(n, allocated[n.name], frozenset(busy[n.name])) for n in nodes),
        tenants=(TenantState(name=tenant, quota=Quota()),),
        pending=tuple(pending_job(job, tenant, {}) for job in pending),
        running=tuple(running),
        now=now.timestamp(),
        policy=VC_POLICY,
    )


def vc_nodes(session: Session, vc: VirtualClusterRow) -> list[Node]:
    """The cluster's virtual nodes, each with its placed resources and GPU devices."""
    gpus_of = {
        row.name: {g["index"]: g for g in row.gpus}
        for row in session.scalars(
            select(NodeRow).where(NodeRow.name.in_({p["node"] for p in vc.placement}))
        )
    }
    nodes = []
    for placement in placement_from_json(vc.placement):
        devices = gpus_of.get(placement.node, {})
        gpus = tuple(
            GpuDevice(
                index=i,
                model=str(devices.get(i, {}).get("model", "")),
                memory=int(devices.get(i, {}).get("memory", 0)),
                uuid=str(devices.get(i, {}).get("uuid", "")),
            )
            for i in placement.gpu_indices
        )
        nodes.append(
            Node(
                name=vnode_hostname(vc.name, placement.index),
                pool=VC_POOL,
                site=placement.node,
                capacity=Resources(
                    placement.resources.cpu_milli, placement.resources.memory, len(gpus)
                ),
                gpus=gpus,
            )
        )
    return nodes
