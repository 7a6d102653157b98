"""Accounting: what finished tasks consumed, per tenant and user."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from virtuai.services.access import Caller, scoped_to_tenants
from virtuai.store.models import NodeRow, TenantRow, UsageRow, UserRow


@dataclass(frozen=True, slots=True)
class UsageTotals:
    tenant: str
    user: str  # "*" in per-tenant totals
    jobs: int
    tasks: int
    wall_s: float
    cpu_s: float
    gpu_s: float
    memory_gb_s: float
    site: str | None = None  # in per-site totals: where the tasks ran ("local": here)


def usage_report(
    session: Session,
    caller: Caller,
    tenant: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None = None,
) -> tuple[list[UsageTotals], list[UsageTotals]]:
    """Per (tenant, user) rows and per-tenant totals of tasks that finished in
    ``[since, until)`` (a task is counted where it ended, as ``sacct -E`` does)."""
    columns = (
        func.count(func.distinct(UsageRow.job_id)),
        func.count(UsageRow.id),
        func.sum(UsageRow.wall_s),
        func.sum(UsageRow.cpu_s),
        func.sum(UsageRow.gpu_s),
        func.sum(UsageRow.memory_gb_s),
    )
    base = (
        select(TenantRow.name, UserRow.name, *columns)
        .join(TenantRow, TenantRow.id == UsageRow.tenant_id)
        .join(UserRow, UserRow.id == UsageRow.user_id)
    )
    base = scoped_to_tenants(base, caller, tenant)
    if since is not None:
        base = base.where(UsageRow.finished_at >= since)
    if until is not None:
        base = base.where(UsageRow.finished_at < until)
    rows = [
        _totals(t, u, rest)
        for t, u, *rest in session.execute(
            base.group_by(TenantRow.name, UserRow.name).order_by(TenantRow.name, UserRow.name)
        )
    ]
    per_tenant = base.with_only_columns(TenantRow.name, *columns).group_by(TenantRow.name)
    totals = [
        _totals(t, "*", rest) for t, *rest in session.execute(per_tenant.order_by(TenantRow.name))
    ]
    return rows, totals


def _totals(tenant: str, user: str, values: Sequence[float | None]) -> UsageTotals:
    jobs, tasks, wall, cpu, gpu, mem = (value or 0 for value in values)
    return UsageTotals(
        tenant=tenant,
        user=user,
        jobs=int(jobs),
        tasks=int(tasks),
        wall_s=float(wall),
        cpu_s=float(cpu),
        gpu_s=float(gpu),
        memory_gb_s=float(mem),
    )


def usage_by_site(
    session: Session,
    caller: Caller,
    tenant: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None = None,
) -> list[UsageTotals]:
    """Per (tenant, site) totals: one ledger, split by where the work ran."""
    site = func.coalesce(NodeRow.site, "local")
    query = (
        select(
            TenantRow.name,
            site,
            func.count(func.distinct(UsageRow.job_id)),
            func.count(UsageRow.id),
            func.sum(UsageRow.wall_s),
            func.sum(UsageRow.cpu_s),
            func.sum(UsageRow.gpu_s),
            func.sum(UsageRow.memory_gb_s),
        )
        .join(TenantRow, TenantRow.id == UsageRow.tenant_id)
        .outerjoin(NodeRow, NodeRow.name == UsageRow.node)
    )
    query = scoped_to_tenants(query, caller, tenant)
    if since is not None:
        query = query.where(UsageRow.finished_at >= since)
    if until is not None:
        query = query.where(UsageRow.finished_at < until)
    query = query.group_by(TenantRow.name, site).order_by(TenantRow.name, site)
    out = []
    for t, where, *rest in session.execute(query):
        totals = _totals(t, "*", rest)
        out.append(dataclasses.replace(totals, site=str(where)))
    return out
