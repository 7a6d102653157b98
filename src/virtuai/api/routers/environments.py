from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.common import Name
from virtuai.api.schemas.environments import EnvironmentCreate, EnvironmentLogOut, EnvironmentOut
from virtuai.services import environments as service
from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import EnvironmentRow

MAX_LOG_OFFSET = 2**53
router = APIRouter(prefix="/api/v1/environments", tags=["environments"])
TenantQuery = Annotated[Name | None, Query(description="default: the caller's only tenant")]


def environment_to_api(row: EnvironmentRow) -> EnvironmentOut:
    return EnvironmentOut(
        name=row.name,
        tenant=row.tenant.name,
        kind=row.kind,
        state=row.state,
        reason=row.reason,
        python=row.python,
        digest=row.digest,
        path=row.path,
        requirements=row.requirements,
        image=row.image,
        created_by=row.created_by,
        created_at=row.created_at,
        ready_at=row.ready_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_environment(
    body: EnvironmentCreate, caller: CallerDep, context: Context
) -> EnvironmentOut:
    """Record an environment to build; the server builds it in the background (`state`)."""
    with transaction(context.sessions) as session:
        row = service.create_environment(
            session,
            caller,
            context.environments,
            tenant=body.tenant,
            name=body.name,
            requirements=body.requirements,
            pyproject=body.pyproject,
            python=body.python,
            now=context.clock.now(),
            image=body.image,
            images=context.vcs,
        )
        out = environment_to_api(row)
    context.wake.set()
    return out


@router.get("")
def list_environments(
    caller: CallerDep, context: Context, tenant: Annotated[Name | None, Query()] = None
) -> list[EnvironmentOut]:
    with read_transaction(context.sessions) as session:
        return [environment_to_api(r) for r in service.list_environments(session, caller, tenant)]


@router.get("/{name}")
def get_environment(
    name: str, caller: CallerDep, context: Context, tenant: TenantQuery = None
) -> EnvironmentOut:
    with read_transaction(context.sessions) as session:
        return environment_to_api(service.get_environment(session, caller, tenant, name))


@router.get("/{name}/log")
def environment_log(
    name: str,
    caller: CallerDep,
    context: Context,
    tenant: TenantQuery = None,
    offset: Annotated[int, Query(ge=0, le=MAX_LOG_OFFSET)] = 0,
) -> EnvironmentLogOut:
    """The build log from `offset` (at most 1 MiB) and the next offset; poll it to follow."""
    with read_transaction(context.sessions) as session:
        row = service.get_environment(session, caller, tenant, name)
        state = row.state
        data, next_offset = service.read_log(context.environments, row, offset)
    return EnvironmentLogOut(data=data, offset=next_offset, state=state)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_environment(
    name: str, caller: CallerDep, context: Context, tenant: TenantQuery = None
) -> None:
    """Delete an environment no live job uses (409 otherwise)."""
    with transaction(context.sessions) as session:
        service.delete_environment(session, caller, tenant, name)
