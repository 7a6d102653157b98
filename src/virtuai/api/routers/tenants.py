from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.tenants import (
    LimitsIn,
    LimitsOut,
    PoolQuotaOut,
    QuotaIn,
    TenantCreate,
    TenantOut,
    TenantUpdate,
)
from virtuai.domain.cohorts import QuotaAccount, cohort_accounts
from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import PoolQuota, Quota
from virtuai.domain.units import MILLI, parse_cpu, parse_duration, parse_memory
from virtuai.services import accounts
from virtuai.services import tenants as service
from virtuai.services.access import Caller
from virtuai.store.db import read_transaction, transaction
from virtuai.store.tenancy import pool_quotas

router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])


def limits_from_api(limits: LimitsIn | None, field: str) -> Quota:
    if limits is None:
        return Quota()
    return Quota(
        cpu_milli=None if limits.cpu is None else parse_cpu(limits.cpu, field=f"{field}.cpu"),
        memory=None
        if limits.memory is None
        else parse_memory(limits.memory, field=f"{field}.memory"),
        gpu=limits.gpu,
    )


def _limits(quota: Quota) -> LimitsOut:
    cpu = quota.cpu_milli
    return LimitsOut(cpu=None if cpu is None else cpu / MILLI, memory=quota.memory, gpu=quota.gpu)


def _amounts(r: Resources) -> LimitsOut:
    return LimitsOut(cpu=r.cpu_milli / MILLI, memory=r.memory, gpu=r.gpu)


def tenants_to_api(
    views: list[service.TenantView], members: list[service.TenantView], caller: Caller
) -> list[TenantOut]:
    """``views`` with their accounts; borrowing and lending are counted among ``members``
    (every tenant of their cohorts)."""
    groups: dict[tuple[str, str], dict[str, tuple[PoolQuota, Resources]]] = {}
    for member in members:
        for quota in pool_quotas(member.row):
            key = (member.row.cohort or f"tenant:{member.row.name}", quota.pool)
            used = member.usage.get(quota.pool, Resources())
            groups.setdefault(key, {})[member.row.name] = (quota, used)
    accounts: dict[tuple[str, str], QuotaAccount] = {}
    for (_, pool), group in groups.items():
        for tenant, account in cohort_accounts(group).items():
            accounts[(tenant, pool)] = account
    return [_tenant_to_api(view, accounts, caller) for view in views]


def _tenant_to_api(
    view: service.TenantView, accounts: dict[tuple[str, str], QuotaAccount], caller: Caller
) -> TenantOut:
    row = view.row
    quotas = pool_quotas(row)
    role = caller.role_in(row.name)
    return TenantOut(
        name=row.name,
        quota=_limits(next((q.nominal for q in quotas if q.pool == "*"), Quota())),
        usage=_amounts(view.total_usage),
        quotas=[
            PoolQuotaOut(
                pool=q.pool,
                nominal=_limits(q.nominal),
                borrowing_limit=_limits(q.borrowing_limit),
                lending_limit=_limits(q.lending_limit),
                used=_amounts(accounts[(row.name, q.pool)].used),
                borrowed=_amounts(accounts[(row.name, q.pool)].borrowed),
                lent=_amounts(accounts[(row.name, q.pool)].lent),
            )
            for q in quotas
        ],
        weight=row.weight,
        cohort=row.cohort,
        role=None if role is None else str(role),
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        notebook_idle_timeout=row.notebook_idle_timeout_s,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_tenant(body: TenantCreate, caller: CallerDep, context: Context) -> TenantOut:
    with transaction(context.sessions) as session:
        view = service.create_tenant(
            session,
            caller,
            body.name,
            limits_from_api(body.quota, "quota"),
            body.weight,
            context.clock.now(),
            cohort=body.cohort,
        )
        return tenants_to_api([view], service.cohort_members(session, [view]), caller)[0]


@router.get("")
def list_tenants(caller: CallerDep, context: Context) -> list[TenantOut]:
    with read_transaction(context.sessions) as session:
        views = service.list_tenants(session, caller)
        return tenants_to_api(views, service.cohort_members(session, views), caller)


@router.get("/{name}")
def get_tenant(name: str, caller: CallerDep, context: Context) -> TenantOut:
    with read_transaction(context.sessions) as session:
        return _one(session, caller, name)


@router.patch("/{name}")
def update_tenant(name: str, body: TenantUpdate, caller: CallerDep, context: Context) -> TenantOut:
    with transaction(context.sessions) as session:
        service.update_tenant(
            session,
            caller,
            name,
            cohort=body.cohort,
            weight=body.weight,
            clear_cohort=body.leave_cohort,
            notebook_idle_timeout_s=None
            if body.notebook_idle_timeout is None
            else parse_duration(body.notebook_idle_timeout, field="notebook_idle_timeout"),
        )
        result = _one(session, caller, name)
    context.wake.set()  # a new cohort may lend at once
    return result


@router.put("/{name}/quota")
def set_quota(name: str, body: QuotaIn, caller: CallerDep, context: Context) -> TenantOut:
    quota = PoolQuota(
        pool=body.pool,
        nominal=limits_from_api(body, "quota"),
        borrowing_limit=limits_from_api(body.borrowing, "borrowing"),
        lending_limit=limits_from_api(body.lending, "lending"),
    )
    with transaction(context.sessions) as session:
        service.set_quota(session, caller, name, quota)
        result = _one(session, caller, name)
    context.wake.set()  # a larger quota may admit waiting jobs now
    return result


@router.post("/{name}/disable")
def disable_tenant(name: str, caller: CallerDep, context: Context) -> TenantOut:
    """No new jobs or clusters; what runs and waits goes on (administrators)."""
    with transaction(context.sessions) as session:
        accounts.set_tenant_disabled(session, caller, name, True, context.clock.now())
        return _one(session, caller, name)


@router.post("/{name}/enable")
def enable_tenant(name: str, caller: CallerDep, context: Context) -> TenantOut:
    with transaction(context.sessions) as session:
        accounts.set_tenant_disabled(session, caller, name, False, context.clock.now())
        return _one(session, caller, name)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_tenant(
    name: str,
    caller: CallerDep,
    context: Context,
    force: Annotated[
        bool, Query(description="cancel its jobs and delete its clusters first")
    ] = False,
) -> None:
    """409 while it has live work, unless ``force``; its accounting stays (administrators)."""
    with transaction(context.sessions) as session:
        accounts.delete_tenant(session, caller, name, force, context.clock.now())
    context.wake.set()


def _one(session: Session, caller: Caller, name: str) -> TenantOut:
    view = service.get_tenant(session, caller, name)
    return tenants_to_api([view], service.cohort_members(session, [view]), caller)[0]
