"""Tenant look-ups shared by the services and the loops."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import ANY_POOL, PoolQuota, Quota
from virtuai.errors import NotFound
from virtuai.store.inventory import placement_from_json, platform_job_holds, vc_holds
from virtuai.store.models import JobRow, NodeRow, TenantQuotaRow, TenantRow, VirtualClusterRow


def pool_quota_from_row(q: TenantQuotaRow) -> PoolQuota:
    return PoolQuota(
        pool=q.pool,
        nominal=Quota(q.nominal_cpu_milli, q.nominal_memory, q.nominal_gpu),
        borrowing_limit=Quota(q.borrowing_cpu_milli, q.borrowing_memory, q.borrowing_gpu),
        lending_limit=Quota(q.lending_cpu_milli, q.lending_memory, q.lending_gpu),
    )


def pool_quotas(row: TenantRow) -> tuple[PoolQuota, ...]:
    return tuple(pool_quota_from_row(q) for q in row.quotas)


def quota_of(row: TenantRow) -> Quota:
    """The tenant-wide nominal quota (pool ``*``); unlimited when there is none."""
    for q in row.quotas:
        if q.pool == ANY_POOL:
            return pool_quota_from_row(q).nominal
    return Quota()


def set_pool_quota(row: TenantRow, quota: PoolQuota) -> None:
    """Create or replace the tenant's entry for ``quota.pool``."""
    entry = next((q for q in row.quotas if q.pool == quota.pool), None)
    if entry is None:
        entry = TenantQuotaRow(pool=quota.pool)
        row.quotas.append(entry)
    entry.nominal_cpu_milli, entry.nominal_memory, entry.nominal_gpu = _limits(quota.nominal)
    entry.borrowing_cpu_milli, entry.borrowing_memory, entry.borrowing_gpu = _limits(
        quota.borrowing_limit
    )
    entry.lending_cpu_milli, entry.lending_memory, entry.lending_gpu = _limits(quota.lending_limit)


def _limits(quota: Quota) -> tuple[int | None, int | None, int | None]:
    return quota.cpu_milli, quota.memory, quota.gpu


def usage_by_tenant_pool(session: Session) -> dict[int, dict[str, Resources]]:
    """What admitted, unfinished work (jobs and virtual clusters) holds, per tenant and pool
    (``*``: all pools)."""
    pools: dict[str, str] = {
        name: pool for name, pool in session.execute(select(NodeRow.name, NodeRow.pool))
    }
    usage: dict[int, dict[str, Resources]] = defaultdict(lambda: defaultdict(Resources))
    rows = list(
        session.execute(select(JobRow.tenant_id, JobRow.placement).where(platform_job_holds()))
    )
    rows += session.execute(
        select(VirtualClusterRow.tenant_id, VirtualClusterRow.placement).where(vc_holds())
    )
    for tenant_id, placement in rows:
        for task in placement_from_json(placement):
            usage[tenant_id][pools.get(task.node, "")] += task.resources
            usage[tenant_id][ANY_POOL] += task.resources
    return {tenant: dict(by_pool) for tenant, by_pool in usage.items()}


def get_tenant_row(session: Session, name: str) -> TenantRow:
    row = session.scalars(select(TenantRow).where(TenantRow.name == name)).one_or_none()
    if row is None or row.deleted_at is not None:
        raise NotFound(f"tenant {name!r} not found", field="tenant")
    return row


def usage_by_tenant(
    session: Session, tenant_ids: Iterable[int] | None = None
) -> dict[int, Resources]:
    """What each tenant's admitted, unfinished jobs and virtual clusters hold now."""
    wanted = None if tenant_ids is None else list(tenant_ids)
    jobs = (
        select(
            JobRow.tenant_id,
            func.sum(JobRow.cpu_milli * JobRow.tasks),
            func.sum(JobRow.memory * JobRow.tasks),
            func.sum(JobRow.gpu * JobRow.tasks),
        )
        .where(platform_job_holds())
        .group_by(JobRow.tenant_id)
    )
    vcs = (
        select(
            VirtualClusterRow.tenant_id,
            func.sum(VirtualClusterRow.cpu_milli * VirtualClusterRow.nodes),
            func.sum(VirtualClusterRow.memory * VirtualClusterRow.nodes),
            func.sum(VirtualClusterRow.gpu * VirtualClusterRow.nodes),
        )
        .where(vc_holds())
        .group_by(VirtualClusterRow.tenant_id)
    )
    if wanted is not None:
        jobs = jobs.where(JobRow.tenant_id.in_(wanted))
        vcs = vcs.where(VirtualClusterRow.tenant_id.in_(wanted))
    usage: dict[int, Resources] = defaultdict(Resources)
    for query in (jobs, vcs):
        for tenant_id, cpu, memory, gpu in session.execute(query):
            usage[tenant_id] += Resources(int(cpu or 0), int(memory or 0), int(gpu or 0))
    return dict(usage)
