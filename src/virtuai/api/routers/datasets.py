from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.common import Name
from virtuai.api.schemas.datasets import DatasetCopyOut, DatasetCreate, DatasetOut
from virtuai.errors import Unavailable
from virtuai.services import datasets as service
from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import DatasetRow

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])
TenantQuery = Annotated[Name | None, Query(description="default: the caller's only tenant")]


def dataset_to_api(session: Session, row: DatasetRow) -> DatasetOut:
    return DatasetOut(
        name=row.name,
        tenant=row.tenant.name,
        site=row.site,
        path=row.path,
        created_by=row.created_by,
        created_at=row.created_at,
        jobs=service.users_of(session, row),
        copies=[
            DatasetCopyOut(
                site=c.site,
                path=c.path,
                state=c.state,
                progress=c.progress,
                message=c.message,
                started_at=c.started_at,
                finished_at=c.finished_at,
            )
            for c in sorted(row.copies, key=lambda c: c.site)
        ],
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def add_dataset(body: DatasetCreate, caller: CallerDep, context: Context) -> DatasetOut:
    """Record where a dataset is; its path is looked at there first (a site over SSH)."""
    if context.environments is None:
        raise Unavailable("this server has no workspaces for datasets")
    request = service.DatasetRequest(
        tenant=body.tenant, name=body.name, path=body.path, site=body.site
    )
    with context.sessions() as session:
        tenant = service.check_dataset(
            session, caller, request, context.environments.workspaces_dir
        )
    with transaction(context.sessions) as session:
        row = service.record_dataset(session, caller, tenant, request, context.clock.now())
        return dataset_to_api(session, row)


@router.get("")
def list_datasets(
    caller: CallerDep, context: Context, tenant: Annotated[Name | None, Query()] = None
) -> list[DatasetOut]:
    with read_transaction(context.sessions) as session:
        return [dataset_to_api(session, r) for r in service.list_datasets(session, caller, tenant)]


@router.get("/{name}")
def get_dataset(
    name: str, caller: CallerDep, context: Context, tenant: TenantQuery = None
) -> DatasetOut:
    with read_transaction(context.sessions) as session:
        return dataset_to_api(session, service.get_dataset(session, caller, tenant, name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove_dataset(
    name: str, caller: CallerDep, context: Context, tenant: TenantQuery = None
) -> None:
    """Forget a dataset no unfinished job reads (409 otherwise); the data itself stays."""
    with transaction(context.sessions) as session:
        service.remove_dataset(session, caller, tenant, name)
