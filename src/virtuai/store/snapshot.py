"""The scheduler's view of the world, read from the database.

Shared by the scheduling loop (to decide) and by the API (to plan and to show
fair share), so that what users are told is computed exactly as decided.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from virtuai.domain.resources import Resources
from virtuai.scheduler.snapshot import (
    HistoricalUsage,
    PendingJob,
    Policy,
    RunningJob,
    Snapshot,
    TenantState,
)
from virtuai.store.inventory import HOLDING_STATES, load_node_states, placement_from_json
from virtuai.store.models import JobRow, TenantRow
from virtuai.store.tenancy import pool_quotas, quota_of, usage_by_tenant


def build_snapshot(
    session: Session,
    *,
    now: dt.datetime,
    policy: Policy,
    preemptible: Mapping[str, bool],
    pending: Sequence[JobRow],
) -> Snapshot:
    tenants = list(session.scalars(select(TenantRow).options(selectinload(TenantRow.quotas))))
    names = {t.id: t.name for t in tenants}
    return Snapshot(
        nodes=tuple(load_node_states(session)),
        tenants=tuple(tenant_states(session, tenants)),
        pending=tuple(pending_job(job, names[job.tenant_id], preemptible) for job in pending),
        running=tuple(running_jobs(session, names, preemptible, now)),
        now=now.timestamp(),
        policy=policy,
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


def pending_job(job: JobRow, tenant: str, preemptible: Mapping[str, bool]) -> PendingJob:
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
    )


def running_jobs(
    session: Session, names: Mapping[int, str], preemptible: Mapping[str, bool], now: dt.datetime
) -> list[RunningJob]:
    """Every job holding resources; one admitted but not started yet counts from now."""
    jobs = session.scalars(
        select(JobRow).where(JobRow.state.in_(HOLDING_STATES)).order_by(JobRow.id)
    )
    running = []
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
                preempted_for=None if job.preempted_for is None else str(job.preempted_for),
            )
        )
    return running
