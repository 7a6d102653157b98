from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import TypeAdapter
from sqlalchemy import Row
from sqlalchemy.orm import Session

from virtuai.api.context import ApiContext
from virtuai.api.deps import CallerDep, CallerOrJobDep, Context, JobCredential
from virtuai.api.jobwire import JOB_DETAIL, JOB_PAGE, detailed_job, listed_job
from virtuai.api.schemas.common import ResourcesOut
from virtuai.api.schemas.jobs import (
    JobBatchCreate,
    JobCreate,
    JobDetailOut,
    JobOut,
    LogChunkOut,
    PlacementOut,
    PlanOut,
    SiteCandidateOut,
)
from virtuai.domain.arrays import MAX_ARRAY_SIZE, parse_array
from virtuai.domain.dependencies import Dependency, format_dependencies, parse_dependencies
from virtuai.domain.resources import Resources
from virtuai.domain.sites import site_of_pool
from virtuai.domain.units import (
    MILLI,
    MIN_CPU_MILLI,
    MIN_MEMORY,
    parse_cpu,
    parse_duration,
    parse_memory,
    parse_signal_spec,
)
from virtuai.drivers.base import LogStream
from virtuai.errors import NotFound, VirtuaiError
from virtuai.services import jobs as service
from virtuai.services.access import Caller
from virtuai.services.planning import SchedulingRules
from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import JobRow

MAX_ID = 2**31 - 1  # ids are 32-bit INTEGER columns on PostgreSQL
MAX_LOG_OFFSET = 2**53  # far beyond any log; seek() and JSON numbers stay exact
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
arrays_router = APIRouter(prefix="/api/v1/arrays", tags=["jobs"])


def request_from_api(body: JobCreate, rules: SchedulingRules | None = None) -> service.JobRequest:
    max_array = MAX_ARRAY_SIZE if rules is None else rules.max_array_size
    signal_spec = (15, 0) if body.signal is None else parse_signal_spec(body.signal)
    resources = body.resources
    return service.JobRequest(
        tenant=body.tenant,
        name=body.name,
        command=tuple(body.command),
        per_task=None
        if resources is None
        else Resources(
            cpu_milli=parse_cpu(resources.cpu, field="resources.cpu", minimum=MIN_CPU_MILLI),
            memory=parse_memory(resources.memory, field="resources.memory", minimum=MIN_MEMORY),
            gpu=resources.gpu,
        ),
        tasks=body.tasks,
        walltime_s=parse_duration(body.time, field="time"),
        priority=body.priority,
        env=body.env,
        workdir=body.workdir,
        array=None if body.array is None else parse_array(body.array, max_size=max_array),
        dependencies=() if body.dependency is None else parse_dependencies(body.dependency),
        checkpoint_signal=signal_spec[0],
        checkpoint_grace_s=signal_spec[1] if body.signal is not None else None,
        requeue=body.requeue,
        vc=body.vc,
        node_class=body.node_class,
        constraints=tuple(body.constraints),
        site=body.site,
        environment=body.environment,
        image=body.image,
        data=body.data,
        stage=body.stage,
    )


def job_to_api(job: JobRow) -> JobOut:
    return JobOut(**_orm_fields(job))


def _orm_fields(job: JobRow) -> dict[str, object]:
    vc = None if job.vc is None else job.vc.name
    return _job_fields(job, job.tenant.name, job.user.name, vc)


# The hot endpoints answer with the JSON bytes themselves, dumped by the very adapter
# FastAPI would use (the same bytes): a returned model would be validated once more in
# another trip through the thread pool (docs/benchmarks.md, "API under 200 clients").
_JOB = TypeAdapter(JobOut)


def _json(adapter: TypeAdapter[Any], value: object, status_code: int = 200) -> Response:
    return Response(adapter.dump_json(value), status_code, media_type="application/json")


def _job_fields(
    job: JobRow | Row[Any] | service.SubmittedJob, tenant: str, user: str, vc: str | None
) -> dict[str, object]:
    """The fields of ``JobOut`` from a job's row (an ORM object, a ``LISTED_COLUMNS`` row,
    or the columns ``service.submit_one`` inserted)."""
    return {
        "id": job.id,
        "name": job.name,
        "tenant": tenant,
        "user": user,
        "state": job.state,
        "reason": job.reason,
        "exit_code": job.exit_code,
        "command": job.command,
        "kind": job.kind,
        "resources": ResourcesOut(cpu=job.cpu_milli / MILLI, memory=job.memory, gpu=job.gpu),
        "tasks": job.tasks,
        "time_limit": job.walltime_s,
        "priority": job.priority_class,
        "restart_count": job.restart_count,
        "requeue": job.requeue,
        "array_id": job.array_id,
        "array_index": job.array_index,
        "vc": vc,
        "environment": job.environment,
        "image": job.image,
        "node_class": job.node_class,
        "constraints": list(job.constraints or []),
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
        "data": job.data,
        "stage": job.stage,
    }


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut)
async def submit(body: JobCreate, caller: CallerDep, context: Context) -> Response:
    # A coroutine: the body is checked on the event loop, then the work joins the group
    # commit (store.groupcommit) with the other submits of the moment, and the answer
    # is sent once that transaction is committed.  No trip through the thread pool.
    # The common case (a cached token, a valid body) is answered before this, by
    # api/fastsubmit.py with the same functions; this is every other case.
    request = request_from_api(body, context.rules)
    answer, wake = await context.submits.run(recorder(caller, request, context))
    if wake and not context.wake.is_set():  # set() takes a lock and notifies
        context.wake.set()
    return Response(answer, status.HTTP_201_CREATED, media_type="application/json")


def recorder(
    caller: Caller, request: service.JobRequest, context: ApiContext
) -> Callable[[Session], tuple[bytes, bool]]:
    """The work of one submit in a group commit: the job recorded, its answer's bytes, and
    whether the loops are to be woken (not for a job that waits for another's end)."""

    def record(session: Session) -> tuple[bytes, bool]:
        now, basis = context.clock.now(), context.submit_basis
        # The submitter is the caller: its name saves loading the user's row again.
        if request.array is None:  # the common case: no ORM object, two plain inserts
            one = service.submit_one(
                session, caller, request, context.rules, now, context.vcs, basis
            )
            answer = _JOB.dump_json(JobOut(**_job_fields(one, one.tenant, caller.name, one.vc)))
            return answer, not one.held
        job = service.submit_job(session, caller, request, context.rules, now, context.vcs, basis)
        vc = None if job.vc is None else job.vc.name
        return _JOB.dump_json(JobOut(**_job_fields(job, job.tenant.name, caller.name, vc))), True

    return record


@router.post("/bulk", status_code=status.HTTP_201_CREATED)
def submit_many(body: JobBatchCreate, caller: CallerDep, context: Context) -> list[JobOut]:
    """Submit many jobs at once (a sweep): one request, one transaction, all or none.

    Each job is checked as ``POST /api/v1/jobs`` checks it; a refusal names the
    job by its index (``jobs.3.resources``) and nothing is recorded.
    """
    requests = []
    for index, item in enumerate(body.jobs):
        try:
            requests.append(request_from_api(item))
        except VirtuaiError as error:
            raise _for_job(error, index) from None
    result = []
    with transaction(context.sessions) as session:
        now = context.clock.now()
        for index, request in enumerate(requests):
            try:
                row = service.submit_job(session, caller, request, context.rules, now, context.vcs)
            except VirtuaiError as error:
                raise _for_job(error, index) from None
            result.append(job_to_api(row))
    context.wake.set()
    return result


def _for_job(error: VirtuaiError, index: int) -> VirtuaiError:
    field = f"jobs.{index}" + ("" if error.field is None else f".{error.field}")
    message = f"jobs.{index}: {error.message}"
    return type(error)(message, field=field)


@router.post("/plan")
def plan(body: JobCreate, caller: CallerDep, context: Context) -> PlanOut:
    """Can it ever run, where and when would it start, what would it wait for: not submitted."""
    request = request_from_api(body, context.rules)
    with read_transaction(context.sessions) as session:
        result, choice = service.plan_request(
            session, caller, request, context.rules, context.clock.now()
        )
    return PlanOut(
        site=choice.site,
        site_reason=choice.why,
        candidates=[
            SiteCandidateOut(
                site=c.site,
                feasible=c.feasible,
                why=c.why,
                expected_wait_s=c.expected_wait_s,
            )
            for c in choice.candidates
        ],
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


DEFAULT_PAGE = 100
MAX_PAGE = 10_000
NEXT_PAGE_HEADER = "X-Next-Before-Id"


@router.get("", response_model=list[JobOut])
def list_jobs(
    caller: CallerDep,
    context: Context,
    tenant: str | None = None,
    state: str | None = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE, description="Page size (newest first).")
    ] = DEFAULT_PAGE,
    array_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    user: Annotated[str | None, Query(max_length=63, description="submitted by")] = None,
    before_id: Annotated[
        int | None,
        Query(
            ge=1,
            le=2**63 - 1,
            description=f"Only jobs with a smaller id: the {NEXT_PAGE_HEADER} of a page.",
        ),
    ] = None,
) -> Response:
    """Jobs newest first, a page at a time; a full page names the next in the
    ``X-Next-Before-Id`` header."""
    with read_transaction(context.sessions) as session:
        rows = service.list_jobs(session, caller, tenant, state, limit, array_id, user, before_id)
    page = [listed_job(r) for r in rows]  # plain dicts, the same bytes (api/jobwire.py)
    response = Response(JOB_PAGE.dump_json(page), media_type="application/json")
    if len(page) == limit:
        response.headers[NEXT_PAGE_HEADER] = str(page[-1]["id"])
    return response


@router.get("/{job_id}", response_model=JobDetailOut)
def get_job(job_id: JobId, caller: CallerDep, context: Context) -> Response:
    with read_transaction(context.sessions) as session:
        detail = service.get_job_detail(session, caller, job_id)
    # A plain dict, the same bytes as JobDetailOut's (api/jobwire.py).
    return Response(JOB_DETAIL.dump_json(detailed_job(detail)), media_type="application/json")


@router.post("/{job_id}/cancel")
def cancel(job_id: JobId, caller: CallerDep, context: Context) -> JobOut:
    with transaction(context.sessions) as session:
        result = job_to_api(service.cancel_job(session, caller, job_id, context.clock.now()))
    context.wake.set()
    return result


@router.post("/{job_id}/requeue")
def requeue(job_id: JobId, who: CallerOrJobDep, context: Context) -> JobOut:
    """Stop a running job and queue it again, same id (Slurm's ``scontrol requeue``).

    A member of the job's tenant may ask, or the job itself with its job token
    (``$VIRTUAI_JOB_TOKEN`` in its environment).
    """
    if isinstance(who, JobCredential) and who.job_id != job_id:
        raise NotFound(f"job {job_id} not found", field="id")
    with transaction(context.sessions) as session:
        job = service.requeue_job(
            session,
            job_id,
            context.clock.now(),
            caller=None if isinstance(who, JobCredential) else who,
            attempt=who.attempt if isinstance(who, JobCredential) else None,
        )
        result = job_to_api(job)
    context.wake.set()
    return result


@arrays_router.post("/{array_id}/cancel")
def cancel_array(array_id: JobId, caller: CallerDep, context: Context) -> list[JobOut]:
    """Cancel every element of an array that has not ended (Slurm's ``scancel ARRAY_ID``)."""
    with transaction(context.sessions) as session:
        jobs = service.cancel_array(session, caller, array_id, context.clock.now())
        result = [job_to_api(j) for j in jobs]
    context.wake.set()
    return result


@router.get("/{job_id}/logs")
def logs(
    job_id: JobId,
    caller: CallerDep,
    context: Context,
    task: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    stream: LogStream = LogStream.STDOUT,
    offset: Annotated[int, Query(ge=0, le=MAX_LOG_OFFSET)] = 0,
) -> LogChunkOut:
    with read_transaction(context.sessions) as session:
        chunk = service.read_logs(session, caller, job_id, task, stream, offset, context.drivers)
    return LogChunkOut(
        data=chunk.data.decode("utf-8", errors="replace"), offset=chunk.offset, eof=chunk.eof
    )
