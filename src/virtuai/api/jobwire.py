"""A job's JSON, from its row, without building the response models: the hot read paths.

A page of 50 jobs built 150 pydantic models (``JobOut``, its ``ResourcesOut``, each
``PlacementOut``), validating every field of rows the database had just typed, only to
dump them again: that was the largest share of the server's CPU under the scale load
(#7 §2; docs/benchmarks.md, "The read paths").  Here a job is a plain dict with
``JobOut``'s fields, in its order, dumped by a ``TypeAdapter`` over ``TypedDict``s of the
same fields and types: pydantic-core's own serialisers, so the same bytes as the models
give (datetimes, floats, nulls), which ``tests/unit/api/test_jobwire.py`` holds for every
field.  Input is still validated everywhere; this is only the way out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Row, RowMapping
from typing_extensions import TypedDict

from virtuai.domain.dependencies import Dependency, format_dependencies
from virtuai.domain.sites import site_of_pool
from virtuai.domain.units import MILLI
from virtuai.services.jobs import JobDetail


class ResourcesWire(TypedDict):
    cpu: float
    memory: int
    gpu: int


class PlacementWire(TypedDict):
    index: int
    node: str
    gpu_indices: list[int]


class JobWire(TypedDict):
    """``JobOut``'s fields in its order (the order of the JSON object's keys)."""

    id: int
    name: str
    tenant: str
    user: str
    state: str
    reason: str
    exit_code: int | None
    command: list[str]
    resources: ResourcesWire
    tasks: int
    time_limit: int
    priority: str
    restart_count: int
    requeue: bool
    array_id: int | None
    array_index: int | None
    vc: str | None
    environment: str | None
    image: str | None
    node_class: str | None
    constraints: list[str]
    dependency: str
    queue_position: int | None
    expected_start: dt.datetime | None
    placement: list[PlacementWire]
    submitted_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    pool: str | None
    site: str | None
    data: str | None
    stage: bool
    kind: str


class EventWire(TypedDict):
    at: dt.datetime
    from_state: str | None
    to_state: str
    reason: str
    actor: str


class TaskWire(TypedDict):
    attempt: int
    index: int
    node: str
    outcome: str | None
    exit_code: int | None
    message: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class JobDetailWire(JobWire):
    """``JobDetailOut``'s fields: ``JobOut``'s, then these."""

    env: dict[str, str]
    workdir: str | None
    events: list[EventWire]
    task_runs: list[TaskWire]


JOB_PAGE: TypeAdapter[list[JobWire]] = TypeAdapter(list[JobWire])
JOB_DETAIL: TypeAdapter[JobDetailWire] = TypeAdapter(JobDetailWire)


def listed_job(row: Row[Any]) -> JobWire:
    """A job's JSON object from a ``services.jobs.LISTED_COLUMNS`` row."""
    dependencies: Sequence[dict[str, Any]] = row.dependencies
    pool: str | None = row.pool
    return {
        "id": row.id,
        "name": row.name,
        "tenant": row.tenant_name,
        "user": row.user_name,
        "state": row.state,
        "reason": row.reason,
        "exit_code": row.exit_code,
        "command": row.command,
        "resources": {"cpu": row.cpu_milli / MILLI, "memory": row.memory, "gpu": row.gpu},
        "tasks": row.tasks,
        "time_limit": row.walltime_s,
        "priority": row.priority_class,
        "restart_count": row.restart_count,
        "requeue": row.requeue,
        "array_id": row.array_id,
        "array_index": row.array_index,
        "vc": row.vc_name,
        "environment": row.environment,
        "image": row.image,
        "node_class": row.node_class,
        "constraints": list(row.constraints or []),
        "dependency": format_dependencies([Dependency.from_json(d) for d in dependencies])
        if dependencies
        else "",
        "queue_position": row.queue_position,
        "expected_start": row.expected_start_at,
        "placement": [
            {"index": p["index"], "node": p["node"], "gpu_indices": p["gpu_indices"]}
            for p in row.placement
        ],
        "submitted_at": row.submitted_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "pool": pool,
        "site": None if pool is None else site_of_pool(pool),
        "data": row.data,
        "stage": row.stage,
        "kind": row.kind,
    }


def detailed_job(detail: JobDetail) -> JobDetailWire:
    """A job's JSON object in detail from ``services.jobs.get_job_detail``'s rows."""
    job = detail.job
    return {
        **listed_job(job),
        "env": job.env,
        "workdir": job.workdir,
        "events": [
            {
                "at": e.at,
                "from_state": e.from_state,
                "to_state": e.to_state,
                "reason": e.reason,
                "actor": e.actor,
            }
            for e in detail.events
        ],
        "task_runs": [_task(t._mapping) for t in detail.tasks],
    }


def _task(task: RowMapping) -> TaskWire:
    # By its mapping: a row is a tuple too, whose ``index`` is ``tuple.index``.
    return {
        "attempt": task["attempt"],
        "index": task["index"],
        "node": task["node"],
        "outcome": task["outcome"],
        "exit_code": task["exit_code"],
        "message": task["message"],
        "started_at": task["started_at"],
        "finished_at": task["finished_at"],
    }
