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


# ``services.jobs.LISTED_COLUMNS``' names in their order: a row is unpacked by position,
# since reading a Row's field by name costs some fifteen times more (a page reads 1,700).
LISTED_NAMES = (
    "id",
    "name",
    "state",
    "reason",
    "exit_code",
    "command",
    "kind",
    "cpu_milli",
    "memory",
    "gpu",
    "tasks",
    "walltime_s",
    "priority_class",
    "restart_count",
    "requeue",
    "array_id",
    "array_index",
    "environment",
    "image",
    "node_class",
    "constraints",
    "dependencies",
    "queue_position",
    "expected_start_at",
    "placement",
    "submitted_at",
    "started_at",
    "finished_at",
    "pool",
    "data",
    "stage",
    "tenant_name",
    "user_name",
    "vc_name",
)


def listed_job(row: Sequence[Any]) -> JobWire:
    """A job's JSON object from a row that begins with ``LISTED_NAMES``' columns."""
    (
        id_,
        name,
        state,
        reason,
        exit_code,
        command,
        kind,
        cpu_milli,
        memory,
        gpu,
        tasks,
        walltime_s,
        priority_class,
        restart_count,
        requeue,
        array_id,
        array_index,
        environment,
        image,
        node_class,
        constraints,
        dependencies,
        queue_position,
        expected_start_at,
        placement,
        submitted_at,
        started_at,
        finished_at,
        pool,
        data,
        stage,
        tenant_name,
        user_name,
        vc_name,
        *_,
    ) = row
    return {
        "id": id_,
        "name": name,
        "tenant": tenant_name,
        "user": user_name,
        "state": state,
        "reason": reason,
        "exit_code": exit_code,
        "command": command,
        "resources": {"cpu": cpu_milli / MILLI, "memory": memory, "gpu": gpu},
        "tasks": tasks,
        "time_limit": walltime_s,
        "priority": priority_class,
        "restart_count": restart_count,
        "requeue": requeue,
        "array_id": array_id,
        "array_index": array_index,
        "vc": vc_name,
        "environment": environment,
        "image": image,
        "node_class": node_class,
        "constraints": list(constraints or []),
        "dependency": format_dependencies([Dependency.from_json(d) for d in dependencies])
        if dependencies
        else "",
        "queue_position": queue_position,
        "expected_start": expected_start_at,
        "placement": [
            {"index": p["index"], "node": p["node"], "gpu_indices": p["gpu_indices"]}
            for p in placement
        ],
        "submitted_at": submitted_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "pool": pool,
        "site": None if pool is None else site_of_pool(pool),
        "data": data,
        "stage": stage,
        "kind": kind,
    }


def detailed_job(detail: JobDetail) -> JobDetailWire:
    """A job's JSON object in detail from ``services.jobs.get_job_detail``'s rows (the job's
    ``DETAIL_COLUMNS``: ``LISTED_NAMES``' then env and workdir; ``EVENT_COLUMNS``;
    ``TASK_COLUMNS``), each unpacked by position."""
    job = detail.job
    env, workdir = job[len(LISTED_NAMES) :]
    return {
        **listed_job(job),
        "env": env,
        "workdir": workdir,
        "events": [
            {"at": at, "from_state": old, "to_state": new, "reason": reason, "actor": actor}
            for at, old, new, reason, actor in detail.events
        ],
        "task_runs": [
            {
                "attempt": attempt,
                "index": index,
                "node": node,
                "outcome": outcome,
                "exit_code": exit_code,
                "message": message,
                "started_at": started_at,
                "finished_at": finished_at,
            }
            for (
                attempt,
                index,
                node,
                outcome,
                exit_code,
                message,
                started_at,
                finished_at,
            ) in detail.tasks
        ],
    }
