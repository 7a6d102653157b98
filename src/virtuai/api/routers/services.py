"""``/api/v1/services``: apply, list, show and delete inference services (services.serving)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy import select
from sqlalchemy.orm import object_session

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.common import Name, ResourcesOut
from virtuai.api.schemas.services import ReplicaOut, ServiceApply, ServiceEventOut, ServiceOut
from virtuai.domain.resources import Resources
from virtuai.domain.services import PortRules, Readiness, ServiceSpec, base_path
from virtuai.domain.units import (
    MILLI,
    MIN_CPU_MILLI,
    MIN_MEMORY,
    parse_cpu,
    parse_duration,
    parse_memory,
)
from virtuai.errors import InvalidRequest
from virtuai.services import serving as service
from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import ServiceRow, TaskRow
from virtuai.store.serviceevents import recent_service_events

router = APIRouter(prefix="/api/v1/services", tags=["services"])
TenantQuery = Annotated[Name | None, Query(description="default: the caller's only tenant")]


def spec_from_api(body: ServiceApply, ports: PortRules | None = None) -> ServiceSpec:
    port = None if body.port in (None, "auto") else int(body.port)
    problem = None if port is None else (ports or PortRules()).problem(port)
    if problem is not None:
        raise InvalidRequest(f"port: {problem}", field="port")
    resources = body.resources
    per = (
        Resources(cpu_milli=1000, memory=2**30, gpu=0)
        if resources is None
        else Resources(
            cpu_milli=parse_cpu(resources.cpu, field="resources.cpu", minimum=MIN_CPU_MILLI),
            memory=parse_memory(resources.memory, field="resources.memory", minimum=MIN_MEMORY),
            gpu=resources.gpu,
        )
    )
    low, high, target = body.replicas.min, body.replicas.max, body.replicas.target_rps
    readiness = Readiness()
    if body.readiness is not None:
        r = body.readiness
        readiness = Readiness(
            path=r.path,
            interval_s=max(1, parse_duration(r.interval, field="readiness.interval")),
            timeout_s=max(1, parse_duration(r.timeout, field="readiness.timeout")),
            failure_threshold=r.failure_threshold,
            start_timeout_s=max(
                1, parse_duration(r.start_timeout, field="readiness.start_timeout")
            ),
        )
    return ServiceSpec(
        command=tuple(body.command),
        cpu_milli=per.cpu_milli,
        memory=per.memory,
        gpu=per.gpu,
        env=dict(body.env),
        environment=body.environment,
        min_replicas=low,
        max_replicas=max(low, high),
        target_rps=target,
        readiness=readiness,
        auth=body.auth,
        idle_timeout_s=None
        if body.idle_timeout is None
        else max(1, parse_duration(body.idle_timeout, field="idle_timeout")),
        time_s=None if body.time is None else parse_duration(body.time, field="time"),
        priority=body.priority,
        port=port,
    )


def _seconds(s: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _memory(n: int) -> str | int:
    for unit, size in (("Gi", 2**30), ("Mi", 2**20)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return n


def _default_readiness(r: Readiness) -> bool:
    """Whether the document had no ``readiness`` at all: only then are the periods floats
    (the API's are whole seconds), and written out they would change the replica's digest."""
    return r == Readiness() and isinstance(r.interval_s, float)


def spec_to_api(spec: ServiceSpec, tenant: str, name: str) -> dict[str, object]:
    """The ``apply -f`` document of ``spec``: applied again unchanged, it rolls nothing
    (the web dashboard edits and scales services through it)."""
    r = spec.readiness
    document: dict[str, object] = {
        "type": "service",
        "tenant": tenant,
        "name": name,
        "command": list(spec.command),
        "env": dict(spec.env),
        "environment": spec.environment,
        "resources": {
            "cpu": spec.cpu_milli // MILLI if spec.cpu_milli % MILLI == 0 else f"{spec.cpu_milli}m",
            "memory": _memory(spec.memory),
            "gpu": spec.gpu,
        },
        "replicas": {"min": spec.min_replicas, "max": spec.max_replicas}
        | ({} if spec.target_rps is None else {"target_rps": spec.target_rps}),
        "readiness": None
        if _default_readiness(r)
        else {
            "path": r.path,
            "interval": _seconds(int(r.interval_s)),
            "timeout": _seconds(int(r.timeout_s)),
            "failure_threshold": r.failure_threshold,
            "start_timeout": _seconds(r.start_timeout_s),
        },
        "auth": spec.auth,
        "idle_timeout": None if spec.idle_timeout_s is None else _seconds(spec.idle_timeout_s),
        "time": None if spec.time_s is None else _seconds(spec.time_s),
        "priority": spec.priority,
        "port": spec.port,
    }
    return {k: v for k, v in document.items() if v is not None}


def service_to_api(
    row: ServiceRow, request: Request, default_idle_s: int, *, events: bool = True
) -> ServiceOut:
    """The service as the API shows it; ``events``: with its recent history (not in lists,
    where it would cost a query per service)."""
    session = object_session(row)
    spec = ServiceSpec.from_json(row.spec)
    path = base_path(row.tenant.name, row.name)
    replicas = []
    for replica in row.replicas:
        job = replica.job
        node = None
        if session is not None:
            node = session.scalar(
                select(TaskRow.node).where(
                    TaskRow.job_id == job.id, TaskRow.attempt == job.attempt, TaskRow.index == 0
                )
            )
        replicas.append(
            ReplicaOut(
                job_id=job.id,
                generation=replica.generation,
                state=job.state,
                reason=job.reason,
                ready=replica.ready and replica.draining_at is None,
                draining=replica.draining_at is not None,
                probe=replica.probe_message,
                probe_failures=replica.probe_failures,
                node=node,
                started_at=job.started_at,
                ready_at=replica.ready_at,
            )
        )
    return ServiceOut(
        name=row.name,
        tenant=row.tenant.name,
        user=row.user.name,
        state=row.state,
        reason=row.reason,
        path=path,
        url=str(request.base_url).rstrip("/") + path,
        auth=spec.auth,
        command=list(spec.command),
        resources=ResourcesOut(cpu=spec.cpu_milli / MILLI, memory=spec.memory, gpu=spec.gpu),
        environment=spec.environment,
        generation=row.generation,
        replicas_min=spec.min_replicas,
        replicas_max=spec.max_replicas,
        target_rps=spec.target_rps,
        desired=row.desired,
        ready=sum(1 for r in replicas if r.ready),
        readiness_path=spec.readiness.path,
        idle_timeout=spec.idle_timeout_s or default_idle_s,
        last_request_at=row.last_request_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        replicas=replicas,
        events=[]
        if session is None or not events
        else [
            ServiceEventOut(at=e.at, message=e.message)
            for e in recent_service_events(session, row.id)
        ],
        spec=spec_to_api(spec, row.tenant.name, row.name),
    )


def _idle(context: Context) -> int:
    return context.service_idle_timeout_s


@router.post(
    "",
    status_code=status.HTTP_200_OK,
    responses={status.HTTP_201_CREATED: {"model": ServiceOut, "description": "Created"}},
)
def apply_service(
    body: ServiceApply, request: Request, response: Response, caller: CallerDep, context: Context
) -> ServiceOut:
    """Create or change a service (201 when created).  A changed command, resources,
    environment or readiness rolls the replicas one by one; scale and access apply at once."""
    spec = spec_from_api(body, context.service_port_rules)
    with transaction(context.sessions) as session:
        applied = service.apply_service(
            session, caller, body.tenant, body.name, spec, context.rules, context.clock.now()
        )
        out = service_to_api(applied.service, request, _idle(context))
    out.created, out.rolled = applied.created, applied.rolled
    if applied.created:
        response.status_code = status.HTTP_201_CREATED
    context.wake.set()
    return out


@router.get("")
def list_services(
    request: Request, caller: CallerDep, context: Context, tenant: TenantQuery = None
) -> list[ServiceOut]:
    with read_transaction(context.sessions) as session:
        rows = service.list_services(session, caller, tenant)
        return [service_to_api(r, request, _idle(context), events=False) for r in rows]


@router.get("/{name}")
def get_service(
    name: str, request: Request, caller: CallerDep, context: Context, tenant: TenantQuery = None
) -> ServiceOut:
    with read_transaction(context.sessions) as session:
        row = service.get_service(session, caller, tenant, name)
        return service_to_api(row, request, _idle(context))


@router.delete("/{name}")
def delete_service(
    name: str, request: Request, caller: CallerDep, context: Context, tenant: TenantQuery = None
) -> ServiceOut:
    """Stop every replica (SIGTERM); the service is gone once they have ended."""
    with transaction(context.sessions) as session:
        row = service.delete_service(session, caller, tenant, name, context.clock.now())
        out = service_to_api(row, request, _idle(context))
    context.wake.set()
    return out
