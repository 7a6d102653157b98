"""Tenants and their quotas."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import Quota, validate_name
from virtuai.errors import Conflict
from virtuai.services.access import Caller
from virtuai.store.models import TenantRow
from virtuai.store.tenancy import get_tenant_row, usage_by_tenant


@dataclass(frozen=True, slots=True)
class TenantView:
    row: TenantRow
    usage: Resources


def create_tenant(
    session: Session, caller: Caller, name: str, quota: Quota, weight: float, now: dt.datetime
) -> TenantView:
    caller.require_admin("create tenants")
    validate_name(name, field="name")
    if session.scalars(select(TenantRow.id).where(TenantRow.name == name)).first() is not None:
        raise Conflict(f"tenant {name!r} already exists", field="name")
    row = TenantRow(
        name=name,
        quota_cpu_milli=quota.cpu_milli,
        quota_memory=quota.memory,
        quota_gpu=quota.gpu,
        weight=weight,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return TenantView(row, Resources())


def list_tenants(session: Session, caller: Caller) -> list[TenantView]:
    query = select(TenantRow).order_by(TenantRow.name)
    if not caller.is_admin:
        query = query.where(TenantRow.name.in_(list(caller.roles)))
    rows = list(session.scalars(query))
    usage = usage_by_tenant(session, [r.id for r in rows])
    return [TenantView(r, usage.get(r.id, Resources())) for r in rows]


def get_tenant(session: Session, caller: Caller, name: str) -> TenantView:
    caller.require_visible(name)
    row = get_tenant_row(session, name)
    return TenantView(row, usage_by_tenant(session, [row.id]).get(row.id, Resources()))


def set_quota(session: Session, caller: Caller, name: str, quota: Quota) -> TenantView:
    """Replace the quota. Lowering it never stops running work; it only gates new admissions."""
    caller.require_admin("change quotas")
    row = get_tenant_row(session, name)
    row.quota_cpu_milli, row.quota_memory, row.quota_gpu = quota.cpu_milli, quota.memory, quota.gpu
    session.flush()
    return TenantView(row, usage_by_tenant(session, [row.id]).get(row.id, Resources()))
