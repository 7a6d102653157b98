from __future__ import annotations

from fastapi import APIRouter, status

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.tenants import QuotaIn, QuotaOut, TenantCreate, TenantOut
from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import Quota
from virtuai.domain.units import MILLI, parse_cpu, parse_memory
from virtuai.services import tenants as service
from virtuai.store.db import transaction

router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])


def quota_from_api(quota: QuotaIn) -> Quota:
    return Quota(
        cpu_milli=None if quota.cpu is None else parse_cpu(quota.cpu, field="quota.cpu"),
        memory=None if quota.memory is None else parse_memory(quota.memory, field="quota.memory"),
        gpu=quota.gpu,
    )


def tenant_to_api(view: service.TenantView, role: str | None) -> TenantOut:
    row, usage = view.row, view.usage
    return TenantOut(
        name=row.name,
        quota=QuotaOut(
            cpu=None if row.quota_cpu_milli is None else row.quota_cpu_milli / MILLI,
            memory=row.quota_memory,
            gpu=row.quota_gpu,
        ),
        usage=_usage(usage),
        weight=row.weight,
        role=role,
        created_at=row.created_at,
    )


def _usage(usage: Resources) -> QuotaOut:
    return QuotaOut(cpu=usage.cpu_milli / MILLI, memory=usage.memory, gpu=usage.gpu)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_tenant(body: TenantCreate, caller: CallerDep, context: Context) -> TenantOut:
    with transaction(context.sessions) as session:
        view = service.create_tenant(
            session, caller, body.name, quota_from_api(body.quota), body.weight, context.clock.now()
        )
        return tenant_to_api(view, None)


@router.get("")
def list_tenants(caller: CallerDep, context: Context) -> list[TenantOut]:
    with transaction(context.sessions) as session:
        return [
            tenant_to_api(v, _role(caller.role_in(v.row.name)))
            for v in service.list_tenants(session, caller)
        ]


@router.get("/{name}")
def get_tenant(name: str, caller: CallerDep, context: Context) -> TenantOut:
    with transaction(context.sessions) as session:
        return tenant_to_api(service.get_tenant(session, caller, name), _role(caller.role_in(name)))


@router.put("/{name}/quota")
def set_quota(name: str, body: QuotaIn, caller: CallerDep, context: Context) -> TenantOut:
    with transaction(context.sessions) as session:
        view = service.set_quota(session, caller, name, quota_from_api(body))
        result = tenant_to_api(view, _role(caller.role_in(name)))
    context.wake.set()  # a larger quota may admit waiting jobs now
    return result


def _role(role: object) -> str | None:
    return None if role is None else str(role)
