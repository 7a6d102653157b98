"""Tenants, their quotas per pool, cohorts and fair-share weights."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import ANY_POOL, PoolQuota, Quota, validate_name
from virtuai.errors import Conflict, InvalidRequest
from virtuai.services.access import Caller
from virtuai.store.models import NodeRow, TenantRow
from virtuai.store.tenancy import get_tenant_row, set_pool_quota, usage_by_tenant_pool


@dataclass(frozen=True, slots=True)
class TenantView:
    row: TenantRow
    usage: dict[str, Resources] = field(default_factory=dict)  # per pool, "*" = all pools

    @property
    def total_usage(self) -> Resources:
        return self.usage.get(ANY_POOL, Resources())


def create_tenant(
    session: Session,
    caller: Caller,
    name: str,
    quota: Quota,
    weight: float,
    now: dt.datetime,
    cohort: str | None = None,
) -> TenantView:
    caller.require_admin("create tenants")
    validate_name(name, field="name")
    if cohort is not None:
        validate_name(cohort, field="cohort")
    existing = session.scalars(select(TenantRow).where(TenantRow.name == name)).first()
    if existing is not None and existing.deleted_at is not None:
        raise Conflict(
            f"tenant {name!r} was deleted; its name stays with its accounting", field="name"
        )
    if existing is not None:
        raise Conflict(f"tenant {name!r} already exists", field="name")
    row = TenantRow(name=name, weight=weight, cohort=cohort, created_at=now)
    set_pool_quota(row, PoolQuota(pool=ANY_POOL, nominal=quota))
    session.add(row)
    session.flush()
    return TenantView(row)


def list_tenants(session: Session, caller: Caller) -> list[TenantView]:
    query = select(TenantRow).where(TenantRow.deleted_at.is_(None)).order_by(TenantRow.name)
    if not caller.is_admin:
        query = query.where(TenantRow.name.in_(list(caller.roles)))
    usage = usage_by_tenant_pool(session)
    return [TenantView(r, usage.get(r.id, {})) for r in session.scalars(query)]


def cohort_members(session: Session, views: list[TenantView]) -> list[TenantView]:
    """Every tenant in the cohorts of ``views``: what a tenant lends depends on them.

    Not scoped to the caller: it serves accounting only, whose numbers a caller
    sees for its own tenants.
    """
    cohorts = {v.row.cohort for v in views if v.row.cohort is not None}
    if not cohorts:
        return list(views)
    usage = usage_by_tenant_pool(session)
    rows = session.scalars(select(TenantRow).where(TenantRow.cohort.in_(cohorts)))
    members = {r.id: TenantView(r, usage.get(r.id, {})) for r in rows}
    for view in views:
        members.setdefault(view.row.id, view)
    return list(members.values())


def get_tenant(session: Session, caller: Caller, name: str) -> TenantView:
    caller.require_visible(name)
    row = get_tenant_row(session, name)
    return TenantView(row, usage_by_tenant_pool(session).get(row.id, {}))


def set_quota(session: Session, caller: Caller, name: str, quota: PoolQuota) -> TenantView:
    """Replace the tenant's quota in one pool.

    Lowering a quota never stops running work; it gates new admissions, and
    with preemption on, borrowers give back what their cohort-mates reclaim.
    """
    caller.require_admin("change quotas")
    row = get_tenant_row(session, name)
    if (
        quota.pool != ANY_POOL
        and not session.scalars(
            select(NodeRow.name).where(NodeRow.pool == quota.pool).limit(1)
        ).first()
    ):
        raise InvalidRequest(f"there is no pool {quota.pool!r}", field="pool")
    set_pool_quota(row, quota)
    session.flush()
    return get_tenant(session, caller, name)


def update_tenant(
    session: Session,
    caller: Caller,
    name: str,
    *,
    cohort: str | None,
    weight: float | None,
    clear_cohort: bool = False,
    notebook_idle_timeout_s: int | None = None,
) -> TenantView:
    """Set the tenant's cohort (tenants of one cohort lend and borrow), fair-share weight,
    or how long its notebooks may stay idle."""
    caller.require_admin("change tenants")
    row = get_tenant_row(session, name)
    if cohort is not None:
        row.cohort = validate_name(cohort, field="cohort")
    elif clear_cohort:
        row.cohort = None
    if weight is not None:
        row.weight = weight
    if notebook_idle_timeout_s is not None:
        if notebook_idle_timeout_s < 1:
            raise InvalidRequest("at least 1s", field="notebook_idle_timeout")
        row.notebook_idle_timeout_s = notebook_idle_timeout_s
    session.flush()
    return get_tenant(session, caller, name)
