"""Usage records: written once per finished task, the base of accounting."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.resources import Resources
from virtuai.scheduler.fairshare import accrue
from virtuai.store.models import JobRow, TaskRow, TenantRow, UsageRow
from virtuai.store.snapshot import history_of

GIB = 2**30


def record_task_usage(
    session: Session, job: JobRow, task: TaskRow, half_life_s: float = 7 * 86400.0
) -> UsageRow | None:
    """Charge the task for what it was allocated (not what it used), for as long as it ran.

    Allocation is what others could not use, so it is what fair share and
    budgets must count, as Slurm's TRES billing does.  Memory is in GiB.
    Idempotent: a task is charged at most once.  The tenant's decayed usage, the
    base of fair share, grows in the same transaction, so the two never disagree.
    """
    if task.started_at is None or task.finished_at is None:
        return None
    existing = session.scalars(
        select(UsageRow).where(
            UsageRow.job_id == job.id,
            UsageRow.attempt == task.attempt,
            UsageRow.task_index == task.index,
        )
    ).first()
    if existing is not None:
        return existing
    wall = max(0.0, (task.finished_at - task.started_at).total_seconds())
    row = UsageRow(
        job_id=job.id,
        attempt=task.attempt,
        task_index=task.index,
        tenant_id=job.tenant_id,
        user_id=job.user_id,
        node=task.node,
        started_at=task.started_at,
        finished_at=task.finished_at,
        wall_s=wall,
        cpu_s=job.cpu_milli / 1000 * wall,
        gpu_s=job.gpu * wall,
        memory_gb_s=job.memory / GIB * wall,
    )
    session.add(row)
    tenant = session.get(TenantRow, job.tenant_id)
    assert tenant is not None
    history = accrue(
        history_of(tenant),
        Resources(job.cpu_milli, job.memory, job.gpu),
        task.started_at.timestamp(),
        task.finished_at.timestamp(),
        half_life_s,
    )
    tenant.usage_cpu_milli_s = history.cpu_milli_s
    tenant.usage_memory_s = history.memory_s
    tenant.usage_gpu_s = history.gpu_s
    tenant.usage_as_of = history.as_of
    return row
