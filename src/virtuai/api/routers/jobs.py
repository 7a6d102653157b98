from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, status

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.common import ResourcesOut
from virtuai.api.schemas.jobs import (
    EventOut,
    JobCreate,
    JobDetailOut,
    JobOut,
    LogChunkOut,
    PlacementOut,
    PlanOut,
    TaskOut,
)
from virtuai.domain.arrays import parse_array
from virtuai.domain.dependencies import Dependency, format_dependencies, parse_dependencies
from virtuai.domain.resources import Resources
from virtuai.domain.sites import site_of_pool
from virtuai.domain.units import (
    MILLI,
    parse_cpu,
    parse_duration,
    parse_memory,
    parse_signal_spec,
)
from virtuai.drivers.base import LogStream
from virtuai.services import jobs as service
from virtuai.store.db import transaction
from virtuai.store.models import JobRow

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
arrays_router = APIRouter(prefix="/api/v1/arrays", tags=["jobs"])


def request_from_api(body: JobCreate) -> service.JobRequest:
    signal_spec = (15, 0) if body.signal is None else parse_signal_spec(body.signal)
    resources = body.resources
    return service.JobRequest(
        tenant=body.tenant,
        name=body.name,
        command=tuple(body.command),
        per_task=None
        if resources is None
        else Resources(
            cpu_milli=parse_cpu(resources.cpu, field="resources.cpu"),
            memory=parse_memory(resources.memory, field="resources.memory"),
            gpu=resources.gpu,
        ),
        tasks=body.tasks,
        walltime_s=parse_duration(body.time, field="time"),
        priority=body.priority,
        env=body.env,
        workdir=body.workdir,
        array=None if body.array is None else parse_array(body.array),
        dependencies=() if body.dependency is None else parse_dependencies(body.dependency),
        checkpoint_signal=signal_spec[0],
        checkpoint_grace_s=signal_spec[1] if body.signal is not None else None,
        requeue=body.requeue,
        vc=body.vc,
        site=body.site,
    )


def job_to_api(job: JobRow) -> JobOut:
    return JobOut(**_job_fields(job))


def _job_fields(job: JobRow) -> dict[str, object]:
    return {
        "id": job.id,
        "name": job.name,
        "tenant": job.tenant.name,
        "user": job.user.name,
        "state": job.state,
        "reason": job.reason,
        "exit_code": job.exit_code,
        "command": job.command,
        "resources": ResourcesOut(cpu=job.cpu_milli / MILLI, memory=job.memory, gpu=job.gpu),
        "tasks": job.tasks,
        "time_limit": job.walltime_s,
        "priority": job.priority_class,
        "restart_count": job.restart_count,
        "requeue": job.requeue,
        "array_id": job.array_id,
        "array_index": job.array_index,
        "vc": None if job.vc is None else job.vc.name,
        "dependency": format_dependencies([Dependency.from_json(d) for d in job.dependencies]),
        "queue_position": job.queue_position,
        "expected_start": job.expected_start_at,
        "placement": [
            PlacementOut(index=p["index"], node=p["node"], gpu_indices=p["gpu_indices"])
            for p in job.placement
        ],
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "pool": job.pool,
        "site": site_of_pool(job.pool),
    }


@router.post("", status_code=status.HTTP_201_CREATED)
def submit(body: JobCreate, caller: CallerDep, context: Context) -> JobOut:
    request = request_from_api(body)
    with transaction(context.sessions) as session:
        job = service.submit_job(session, caller, request, context.rules, context.clock.now())
        result = job_to_api(job)
    context.wake.set()
    return result


@router.post("/plan")
def plan(body: JobCreate, caller: CallerDep, context: Context) -> PlanOut:
    """Can it ever run, where and when would it start, what would it wait for: not submitted."""
    request = request_from_api(body)
    with transaction(context.sessions) as session:
        result = service.plan_request(session, caller, request, context.rules, context.clock.now())
    return PlanOut(
        can_ever_run=result.can_ever_run,
        starts_now=result.starts_now,
        reason=result.reason,
        kind=None if result.kind is None else str(result.kind),
        queue_position=result.position,
        expected_start=None
        if result.expected_start is None
        else dt.datetime.fromtimestamp(result.expected_start, dt.UTC),
        placement=[
            PlacementOut(index=p.index, node=p.node, gpu_indices=list(p.gpu_indices))
            for p in result.placements
        ],
        preempts=len(result.preemptions),
    )


@router.get("")
def list_jobs(
    caller: CallerDep,
    context: Context,
    tenant: str | None = None,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    array_id: int | None = None,
) -> list[JobOut]:
    with transaction(context.sessions) as session:
        jobs = service.list_jobs(session, caller, tenant, state, limit, array_id)
        return [job_to_api(j) for j in jobs]


@router.get("/{job_id}")
def get_job(job_id: int, caller: CallerDep, context: Context) -> JobDetailOut:
    with transaction(context.sessions) as session:
        detail = service.get_job_detail(session, caller, job_id)
        return JobDetailOut(
            **_job_fields(detail.job),
            env=detail.job.env,
            workdir=detail.job.workdir,
            events=[EventOut.model_validate(e) for e in detail.events],
            task_runs=[TaskOut.model_validate(t) for t in detail.tasks],
        )


@router.post("/{job_id}/cancel")
def cancel(job_id: int, caller: CallerDep, context: Context) -> JobOut:
    with transaction(context.sessions) as session:
        result = job_to_api(service.cancel_job(session, caller, job_id, context.clock.now()))
    context.wake.set()
    return result


@arrays_router.post("/{array_id}/cancel")
def cancel_array(array_id: int, caller: CallerDep, context: Context) -> list[JobOut]:
    """Cancel every element of an array that has not ended (Slurm's ``scancel ARRAY_ID``)."""
    with transaction(context.sessions) as session:
        jobs = service.cancel_array(session, caller, array_id, context.clock.now())
        result = [job_to_api(j) for j in jobs]
    context.wake.set()
    return result


@router.get("/{job_id}/logs")
def logs(
    job_id: int,
    caller: CallerDep,
    context: Context,
    task: Annotated[int, Query(ge=0)] = 0,
    stream: LogStream = LogStream.STDOUT,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> LogChunkOut:
    with transaction(context.sessions) as session:
        chunk = service.read_logs(session, caller, job_id, task, stream, offset, context.drivers)
    return LogChunkOut(
        data=chunk.data.decode("utf-8", errors="replace"), offset=chunk.offset, eof=chunk.eof
    )
