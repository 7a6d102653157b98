"""Datasets: a tenant's data, on a site or on this platform's nodes (members add them).

``check_dataset`` validates a request and looks at the path where it is (with no
transaction open: a site is asked over its SSH); ``record_dataset`` records it.
A path on this platform's nodes must lie in the tenant's workspace
(``<workspaces>/<tenant>``): the server copies it to sites as root, so it must
never read anything the tenant could not.  A dataset some unfinished job uses
cannot be removed.  ``job_data`` resolves a job's ``--data``/``--stage`` into
where it may run.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from virtuai.domain.datasets import Placement, check_path, place_job
from virtuai.domain.sites import SiteState
from virtuai.domain.workload import FINISHED_STATES
from virtuai.drivers.slurm.driver import SiteConfig, build_site_driver
from virtuai.drivers.slurm.staging import inside
from virtuai.errors import Conflict, InvalidRequest, NotFound, VirtuaiError
from virtuai.services.access import Caller, scoped_to_tenants
from virtuai.store.models import DatasetRow, JobRow, SiteRow, TenantRow
from virtuai.store.tenancy import get_tenant_row

_FINISHED = [s.value for s in FINISHED_STATES]


@dataclass(frozen=True, slots=True)
class DatasetRequest:
    tenant: str | None
    name: str
    path: str
    site: str | None = None  # None: on this platform's nodes


def check_dataset(
    session: Session, caller: Caller, req: DatasetRequest, workspaces_dir: Path
) -> str:
    """The tenant's name, once the request is valid and its path exists where it is."""
    tenant = caller.default_tenant(req.tenant)
    caller.require_submit(tenant)
    get_tenant_row(session, tenant)
    why = check_path(req.path)
    if why is not None:
        raise InvalidRequest(f"path {why}", field="path")
    _require_free_name(session, tenant, req.name)
    if req.site is None:
        session.rollback()
        _check_local(tenant, req.path, workspaces_dir)
        return tenant
    site = session.scalar(select(SiteRow).where(SiteRow.name == req.site))
    if site is None or site.state != SiteState.ACTIVE.value:
        raise InvalidRequest(f"no active site {req.site}", field="site")
    login, identity, known, token = site.login, site.identity_path, site.known_hosts, site.token
    session.rollback()  # no transaction open while the site is asked
    driver = build_site_driver(
        SiteConfig(name=req.site, token=token, pool=""),
        login=login,
        identity_path=identity,
        known_hosts=known,
        max_sessions=1,
    )
    try:
        result = driver.client.transport.run(f"test -e {shlex.quote(req.path)}")
    except VirtuaiError as error:
        raise InvalidRequest(f"site {req.site}: {error.message}", field="site") from error
    finally:
        driver.close()
    if result.status != 0:
        raise InvalidRequest(f"no {req.path} at site {req.site}", field="path")
    return tenant


def local_root(workspaces_dir: Path, tenant: str) -> Path:
    return (workspaces_dir / tenant).resolve()


def _check_local(tenant: str, path: str, workspaces_dir: Path) -> None:
    if not inside(path, local_root(workspaces_dir, tenant)):
        raise InvalidRequest(
            f"a dataset here must be in the tenant's workspace "
            f"{local_root(workspaces_dir, tenant)}",
            field="path",
        )
    if not os.path.exists(path):
        raise InvalidRequest(f"no {path} here", field="path")


def record_dataset(
    session: Session, caller: Caller, tenant: str, req: DatasetRequest, now: dt.datetime
) -> DatasetRow:
    caller.require_submit(tenant)
    row_tenant = get_tenant_row(session, tenant)
    _require_free_name(session, tenant, req.name)
    row = DatasetRow(
        tenant_id=row_tenant.id,
        name=req.name,
        site=req.site,
        path=req.path,
        created_by=caller.name,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def _require_free_name(session: Session, tenant: str, name: str) -> None:
    if _find(session, tenant, name) is not None:
        raise Conflict(f"dataset {name} exists in tenant {tenant}", field="name")


def _find(session: Session, tenant: str, name: str) -> DatasetRow | None:
    return session.scalar(
        select(DatasetRow).join(TenantRow).where(TenantRow.name == tenant, DatasetRow.name == name)
    )


def list_datasets(session: Session, caller: Caller, tenant: str | None) -> list[DatasetRow]:
    query = select(DatasetRow).join(TenantRow).order_by(TenantRow.name, DatasetRow.name)
    query = scoped_to_tenants(query, caller, tenant)
    return list(session.scalars(query))


def get_dataset(session: Session, caller: Caller, tenant: str | None, name: str) -> DatasetRow:
    tenant_name = caller.default_tenant(tenant)
    caller.require_visible(tenant_name)
    row = _find(session, tenant_name, name)
    if row is None:
        raise NotFound(f"dataset {name} not found in tenant {tenant_name}", field="name")
    return row


def users_of(session: Session, row: DatasetRow) -> int:
    """Unfinished jobs of the dataset's tenant that name it."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(JobRow)
            .where(JobRow.tenant_id == row.tenant_id, JobRow.data == row.name)
            .where(JobRow.state.not_in(_FINISHED))
        )
        or 0
    )


def remove_dataset(session: Session, caller: Caller, tenant: str | None, name: str) -> None:
    """Forget a dataset (its data stays where it is, and so do copies on sites)."""
    row = get_dataset(session, caller, tenant, name)
    caller.require_submit(row.tenant.name)
    live = users_of(session, row)
    if live:
        raise Conflict(f"dataset {name} is used by {live} unfinished job(s)", field="name")
    session.delete(row)
    session.flush()


@dataclass(frozen=True, slots=True)
class JobData:
    dataset: DatasetRow
    placement: Placement


def job_data(
    session: Session, tenant: TenantRow, name: str, stage: bool, asked_site: str | None
) -> JobData:
    """Where a job reading dataset ``name`` may run (its ``--site`` was ``asked_site``)."""
    row = session.scalar(
        select(DatasetRow).where(DatasetRow.tenant_id == tenant.id, DatasetRow.name == name)
    )
    if row is None:
        raise NotFound(f"dataset {name} not found in tenant {tenant.name}", field="data")
    placement = place_job(row.site, asked_site, stage)
    if placement.refused:
        raise InvalidRequest(f"dataset {name}: {placement.refused}", field="site")
    return JobData(row, placement)
