"""Tenant look-ups shared by the services and the loops."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import Quota
from virtuai.errors import NotFound
from virtuai.store.inventory import HOLDING_STATES
from virtuai.store.models import JobRow, TenantRow


def quota_of(row: TenantRow) -> Quota:
    return Quota(cpu_milli=row.quota_cpu_milli, memory=row.quota_memory, gpu=row.quota_gpu)


def get_tenant_row(session: Session, name: str) -> TenantRow:
    row = session.scalars(select(TenantRow).where(TenantRow.name == name)).one_or_none()
    if row is None:
        raise NotFound(f"tenant {name!r} not found", field="tenant")
    return row


def usage_by_tenant(
    session: Session, tenant_ids: Iterable[int] | None = None
) -> dict[int, Resources]:
    """What each tenant's admitted, unfinished jobs hold now."""
    query = (
        select(
            JobRow.tenant_id,
            func.sum(JobRow.cpu_milli * JobRow.tasks),
            func.sum(JobRow.memory * JobRow.tasks),
            func.sum(JobRow.gpu * JobRow.tasks),
        )
        .where(JobRow.state.in_(HOLDING_STATES))
        .group_by(JobRow.tenant_id)
    )
    if tenant_ids is not None:
        query = query.where(JobRow.tenant_id.in_(list(tenant_ids)))
    return {
        tenant_id: Resources(int(cpu or 0), int(memory or 0), int(gpu or 0))
        for tenant_id, cpu, memory, gpu in session.execute(query)
    }
