"""Disabling and deleting users and tenants (administrators only).

- A **disabled user** cannot authenticate (401 at once, whatever the credential);
  its running work goes on.  A **disabled tenant** accepts no new jobs or
  clusters; what it runs and queues goes on.
- **Deleting** a user or tenant that never ran anything removes its rows.  One
  with history is *retired*: gone from every list and from every membership,
  its tokens revoked, its rows kept for accounting (``virtuai report`` still
  counts its usage), its name reserved.
- Nothing is deleted while it has live work (jobs not ended, clusters not
  deleted): 409, unless a tenant is deleted with ``force``, which first cancels
  its jobs and asks for its clusters' deletion, as their owners would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session

from virtuai.domain.vcluster import LIVE_STATES, VcState
from virtuai.domain.workload import FINISHED_STATES
from virtuai.errors import Conflict, InvalidRequest
from virtuai.services.access import Caller
from virtuai.services.identity import find_user
from virtuai.store.models import (
    ApiTokenRow,
    DatasetRow,
    EnvironmentRow,
    JobRow,
    MembershipRow,
    ServiceRow,
    TenantRow,
    UserRow,
    VirtualClusterRow,
)
from virtuai.store.tenancy import get_tenant_row
from virtuai.store.transitions import request_cancel, switch_vc_state

# ServiceRow.state, as services/serving.py writes them (it imports this module).
SERVICE_ACTIVE = "active"
SERVICE_DELETING = "deleting"

_ENDED = [s.value for s in FINISHED_STATES]
_LIVE_VC = [s.value for s in LIVE_STATES]


def set_user_disabled(
    session: Session, caller: Caller, name: str, disabled: bool, now: dt.datetime
) -> UserRow:
    caller.require_admin("disable or enable users")
    user = find_user(session, name)
    if disabled and user.id == caller.user_id:
        raise InvalidRequest("you cannot disable yourself", field="name")
    user.disabled_at = (user.disabled_at or now) if disabled else None
    session.flush()
    return user


def delete_user(session: Session, caller: Caller, name: str, now: dt.datetime) -> None:
    caller.require_admin("delete users")
    user = find_user(session, name)
    if user.id == caller.user_id:
        raise InvalidRequest("you cannot delete yourself", field="name")
    jobs, vcs = _live_work(session, JobRow.user_id == user.id, VirtualClusterRow.user_id == user.id)
    if jobs or vcs:
        raise Conflict(
            f"user {name!r} has live work ({_describe(jobs, vcs)}); cancel it first",
            field="name",
        )
    session.execute(delete(MembershipRow).where(MembershipRow.user_id == user.id))
    if _has_history(session, JobRow.user_id == user.id, VirtualClusterRow.user_id == user.id):
        session.execute(
            update(ApiTokenRow)
            .where(ApiTokenRow.user_id == user.id, ApiTokenRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        user.deleted_at = now
        user.disabled_at = user.disabled_at or now
    else:
        session.execute(delete(ApiTokenRow).where(ApiTokenRow.user_id == user.id))
        session.delete(user)
    session.flush()


def set_tenant_disabled(
    session: Session, caller: Caller, name: str, disabled: bool, now: dt.datetime
) -> TenantRow:
    caller.require_admin("disable or enable tenants")
    tenant = get_tenant_row(session, name)
    tenant.disabled_at = (tenant.disabled_at or now) if disabled else None
    session.flush()
    return tenant


def delete_tenant(
    session: Session, caller: Caller, name: str, force: bool, now: dt.datetime
) -> None:
    caller.require_admin("delete tenants")
    tenant = get_tenant_row(session, name)
    jobs, vcs = _live_work(
        session, JobRow.tenant_id == tenant.id, VirtualClusterRow.tenant_id == tenant.id
    )
    # A service is live work even with no replica running (scaled to zero, or not yet
    # reconciled): it used to outlive its tenant, listed and never deletable again.
    services = list(
        session.scalars(
            select(ServiceRow).where(
                ServiceRow.tenant_id == tenant.id, ServiceRow.state == SERVICE_ACTIVE
            )
        )
    )
    if (jobs or vcs or services) and not force:
        raise Conflict(
            f"tenant {name!r} has live work ({_describe(jobs, vcs, services)}); cancel it "
            "first, or delete with force (virtuai tenant delete --force) to cancel it",
            field="name",
        )
    why = f"tenant {name} deleted by {caller.name}"
    for job in jobs:
        request_cancel(session, job, now=now, actor=caller.name, why=why)
    for vc in vcs:
        if vc.state != VcState.DELETING.value:
            switch_vc_state(session, vc, VcState.DELETING, reason=why, now=now, actor=caller.name)
    for service in services:  # the reconciler removes it once its replicas have ended
        service.state, service.reason, service.updated_at = SERVICE_DELETING, why, now
    session.execute(delete(MembershipRow).where(MembershipRow.tenant_id == tenant.id))
    session.execute(
        update(UserRow).where(UserRow.home_tenant_id == tenant.id).values(home_tenant_id=None)
    )
    if _has_history(
        session, JobRow.tenant_id == tenant.id, VirtualClusterRow.tenant_id == tenant.id
    ) or _owns_rows(session, tenant.id):
        tenant.deleted_at = now
        tenant.disabled_at = tenant.disabled_at or now
    else:
        session.delete(tenant)  # its quotas go with it (ORM cascade)
    session.flush()


class _TenantLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def disabled_at(self) -> dt.datetime | None: ...


def require_enabled_tenant(tenant: _TenantLike) -> None:
    """New work is refused in a disabled tenant (running and queued work goes on)."""
    if tenant.disabled_at is not None:
        raise Conflict(
            f"tenant {tenant.name!r} is disabled: it accepts no new work", field="tenant"
        )


def _live_work(
    session: Session, job_filter: ColumnElement[bool], vc_filter: ColumnElement[bool]
) -> tuple[list[JobRow], list[VirtualClusterRow]]:
    jobs = list(
        session.scalars(
            select(JobRow).where(job_filter, JobRow.state.not_in(_ENDED)).order_by(JobRow.id)
        )
    )
    vcs = list(
        session.scalars(
            select(VirtualClusterRow)
            .where(vc_filter, VirtualClusterRow.state.in_(_LIVE_VC))
            .order_by(VirtualClusterRow.id)
        )
    )
    return jobs, vcs


def _has_history(
    session: Session, job_filter: ColumnElement[bool], vc_filter: ColumnElement[bool]
) -> bool:
    jobs = session.scalar(select(func.count()).select_from(JobRow).where(job_filter))
    vcs = session.scalar(select(func.count()).select_from(VirtualClusterRow).where(vc_filter))
    return bool(jobs or vcs)


def _owns_rows(session: Session, tenant_id: int) -> bool:
    """Rows that name the tenant (a foreign key): deleting it would fail (a 500 on
    PostgreSQL for a tenant with only an environment, a dataset or a service)."""
    return any(
        session.scalar(select(row.id).where(row.tenant_id == tenant_id).limit(1)) is not None
        for row in (ServiceRow, EnvironmentRow, DatasetRow)
    )


def _describe(
    jobs: list[JobRow], vcs: list[VirtualClusterRow], services: Sequence[ServiceRow] = ()
) -> str:
    parts = []
    if jobs:
        parts.append(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}")
    if vcs:
        parts.append(f"{len(vcs)} virtual cluster{'s' if len(vcs) != 1 else ''}")
    if services:
        parts.append(f"{len(services)} service{'s' if len(services) != 1 else ''}")
    return ", ".join(parts)


__all__ = [
    "delete_tenant",
    "delete_user",
    "require_enabled_tenant",
    "set_tenant_disabled",
    "set_user_disabled",
]
