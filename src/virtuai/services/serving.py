"""Inference services: apply, list, show, delete; and how a replica is started.

A service is recorded once per tenant and name (``services``); its replicas are
jobs of kind ``service`` started by the leader's reconciler
(``control.serving``) through :func:`start_replica`, as the service's creator,
so each replica is admitted, placed and accounted like any job of the tenant
(quota, fair share, ``usage``).

``apply`` of an existing service changes it in place: a changed replica
template (command, resources, environment, readiness, ...) raises the
generation, and the reconciler rolls the replicas; a changed scale or access
applies without restarting anything.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.resources import Resources
from virtuai.domain.services import (
    HOST_ENV,
    KIND,
    NOT_READY_END,
    ServiceSpec,
    replica_command,
)
from virtuai.domain.workload import FINISHED_STATES
from virtuai.errors import InvalidRequest, NotFound
from virtuai.services.access import Caller
from virtuai.services.identity import caller_from_user, load_user
from virtuai.services.jobs import JobRequest, submit_job
from virtuai.services.planning import SchedulingRules
from virtuai.store.models import JobRow, ServiceReplicaRow, ServiceRow, TenantRow
from virtuai.store.serviceevents import record_service_event
from virtuai.store.tenancy import get_tenant_row
from virtuai.store.transitions import request_cancel

_FINISHED = frozenset(s.value for s in FINISHED_STATES)
DEFAULT_PRIORITY = "normal"
ACTIVE = "active"
DELETING = "deleting"


@dataclass(frozen=True, slots=True)
class Applied:
    service: ServiceRow
    created: bool
    rolled: bool  # the replica template changed: the replicas roll


def replica_request(
    service_name: str, tenant: str, spec: ServiceSpec, rules: SchedulingRules
) -> JobRequest:
    return JobRequest(
        tenant=tenant,
        name=service_name,
        command=replica_command(spec.command),
        per_task=Resources(cpu_milli=spec.cpu_milli, memory=spec.memory, gpu=spec.gpu),
        tasks=1,
        walltime_s=spec.time_s or rules.max_walltime_s,
        priority=spec.priority or DEFAULT_PRIORITY,
        env={**spec.env, HOST_ENV: "127.0.0.1"},
        workdir=None,
        environment=spec.environment,
        kind=KIND,
        host_port=spec.port,
    )


def apply_service(
    session: Session,
    caller: Caller,
    tenant: str | None,
    name: str,
    spec: ServiceSpec,
    rules: SchedulingRules,
    now: dt.datetime,
) -> Applied:
    tenant_name = caller.default_tenant(tenant)
    caller.require_submit(tenant_name)
    tenant_row = get_tenant_row(session, tenant_name)
    # A replica that could never be admitted (resources, time, priority, environment) is
    # refused now, with the job's own message, rather than by the reconciler later.
    with session.begin_nested() as probe:
        submit_job(session, caller, replica_request(name, tenant_name, spec, rules), rules, now)
        probe.rollback()
    row = _find(session, tenant_row, name)
    digest = spec.template_digest()
    if row is not None and row.state == DELETING:
        raise InvalidRequest(
            f"service {name} is being deleted; apply it again once it is gone", field="name"
        )
    if row is None:
        row = ServiceRow(
            tenant_id=tenant_row.id,
            user_id=caller.user_id,
            name=name,
            spec=spec.to_json(),
            digest=digest,
            generation=1,
            state=ACTIVE,
            reason="",
            desired=0,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        record_service_event(session, row.id, f"created by {caller.name}", now)
        return Applied(row, created=True, rolled=False)
    rolled = row.digest != digest
    document = spec.to_json()
    if rolled:
        said = f"applied by {caller.name}: generation {row.generation + 1}, the replicas roll"
        record_service_event(session, row.id, said, now)
    elif row.spec != document:
        record_service_event(session, row.id, f"applied by {caller.name}", now)
    row.spec = document
    row.user_id = caller.user_id  # replicas run as whoever applied last
    row.updated_at = now
    if rolled:
        row.digest = digest
        row.generation += 1
        if NOT_READY_END in row.reason:
            # The crash loop was the old spec's: until the reconciler's next pass sees the
            # new generation, the proxy must hold a request for it, not answer it 503.
            row.reason = ""
    return Applied(row, created=False, rolled=rolled)


def _find(session: Session, tenant: TenantRow, name: str) -> ServiceRow | None:
    return session.scalar(
        select(ServiceRow).where(ServiceRow.tenant_id == tenant.id, ServiceRow.name == name)
    )


def list_services(session: Session, caller: Caller, tenant: str | None) -> list[ServiceRow]:
    query = select(ServiceRow).join(TenantRow).order_by(TenantRow.name, ServiceRow.name)
    if tenant is not None:
        caller.require_visible(tenant)
        query = query.where(TenantRow.name == tenant)
    elif not caller.is_admin:
        query = query.where(TenantRow.name.in_(list(caller.roles)))
    return list(session.scalars(query))


def get_service(session: Session, caller: Caller, tenant: str | None, name: str) -> ServiceRow:
    tenant_name = tenant if tenant is not None else _visible_default(caller)
    if not caller.can_see(tenant_name):
        raise NotFound(f"service {name} not found", field="name")
    row = _find(session, get_tenant_row(session, tenant_name), name)
    if row is None:
        raise NotFound(f"service {name} not found in tenant {tenant_name}", field="name")
    return row


def _visible_default(caller: Caller) -> str:
    if len(caller.roles) == 1:
        return next(iter(caller.roles))
    return caller.default_tenant(None)


def delete_service(
    session: Session, caller: Caller, tenant: str | None, name: str, now: dt.datetime
) -> ServiceRow:
    """Stop every replica; the reconciler removes the service once they have ended."""
    row = get_service(session, caller, tenant, name)
    caller.require_submit(row.tenant.name)
    row.state = DELETING
    row.reason = f"deleted by {caller.name}"
    row.updated_at = now
    for replica in row.replicas:
        if replica.job.state not in _FINISHED:
            replica.draining_at = replica.draining_at or now
            request_cancel(session, replica.job, now=now, actor=caller.name, why="service deleted")
    return row


def replica_jobs(session: Session, service: ServiceRow, limit: int = 50) -> list[JobRow]:
    """The service's replica jobs, newest first (ended ones too: their logs and usage)."""
    return list(
        session.scalars(
            select(JobRow)
            .where(
                JobRow.tenant_id == service.tenant_id,
                JobRow.kind == KIND,
                JobRow.name == service.name,
                JobRow.submitted_at >= service.created_at,
            )
            .order_by(JobRow.id.desc())
            .limit(limit)
        )
    )


def start_replica(
    session: Session, service: ServiceRow, rules: SchedulingRules, now: dt.datetime
) -> ServiceReplicaRow:
    """A new replica of the current generation (the reconciler's step), as its creator."""
    caller = caller_from_user(load_user(session, service.user_id))
    spec = ServiceSpec.from_json(service.spec)
    request = replica_request(service.name, service.tenant.name, spec, rules)
    job = submit_job(session, caller, request, rules, now)
    replica = ServiceReplicaRow(
        service_id=service.id,
        job_id=job.id,
        generation=service.generation,
        ready=False,
        probe_failures=0,
        probe_message="",
        created_at=now,
    )
    session.add(replica)
    session.flush()
    return replica
