"""A page's jobs dumped from plain dicts (``api.jobwire``) are the very bytes the response
models gave: the CLI and every client parse them."""

from __future__ import annotations

import datetime as dt
from collections import namedtuple
from typing import Any

import pytest
from pydantic import TypeAdapter

from virtuai.api.jobwire import (
    JOB_DETAIL,
    JOB_PAGE,
    LISTED_NAMES,
    EventWire,
    JobDetailWire,
    JobWire,
    TaskWire,
    detailed_job,
    listed_job,
)
from virtuai.api.routers.jobs import _job_fields
from virtuai.api.schemas.jobs import EventOut, JobDetailOut, JobOut, TaskOut
from virtuai.domain.dependencies import parse_dependencies
from virtuai.domain.workload import TaskOutcome
from virtuai.services.jobs import (
    DETAIL_COLUMNS,
    EVENT_COLUMNS,
    LISTED_COLUMNS,
    TASK_COLUMNS,
    JobDetail,
)

MODELS = TypeAdapter(list[JobOut])
AT = dt.datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=dt.UTC)


# A row as the database gives it: by position in LISTED_COLUMNS' order, and by name (the
# models' path reads it by name).
Listed = namedtuple("Listed", LISTED_NAMES)  # type: ignore[misc]
Detailed = namedtuple("Detailed", (*LISTED_NAMES, "env", "workdir"))  # type: ignore[misc]
Event = namedtuple("Event", [c.key for c in EVENT_COLUMNS])  # type: ignore[misc]
Task = namedtuple("Task", [c.key for c in TASK_COLUMNS])  # type: ignore[misc]


def row(**changes: Any) -> Any:
    """A ``LISTED_COLUMNS`` row of a pending job, with ``changes``."""
    fields: dict[str, Any] = {
        "id": 7,
        "name": "sweep",
        "tenant_name": "physics",
        "user_name": "alice",
        "vc_name": None,
        "state": "pending",
        "reason": "waiting for quota",
        "exit_code": None,
        "command": ["python", "train.py", "--lr", "0.1"],
        "kind": "job",
        "cpu_milli": 1000,
        "memory": 64 * 2**20,
        "gpu": 0,
        "tasks": 1,
        "walltime_s": 3600,
        "priority_class": "normal",
        "restart_count": 0,
        "requeue": True,
        "array_id": None,
        "array_index": None,
        "environment": None,
        "image": None,
        "node_class": None,
        "constraints": [],
        "dependencies": [],
        "queue_position": None,
        "expected_start_at": None,
        "placement": [],
        "submitted_at": AT,
        "started_at": None,
        "finished_at": None,
        "pool": None,
        "data": None,
        "stage": False,
    }
    return Listed(**(fields | changes))


ROWS = {
    "pending": row(),
    "queued with an estimate": row(queue_position=3, expected_start_at=AT),
    "fractional cpu": row(cpu_milli=1500, memory=1, gpu=2),
    "a tenth of a cpu": row(cpu_milli=100),
    "running, placed": row(
        state="running",
        started_at=AT,
        placement=[
            {"index": 0, "node": "n1", "gpu_indices": [0, 1]},
            {"index": 1, "node": "n2", "gpu_indices": []},
        ],
        vc_name="dev",
        node_class="gpu",
        constraints=["ib", "avx512"],
    ),
    "failed": row(
        state="failed",
        reason="exited with code 3",
        exit_code=3,
        started_at=AT,
        finished_at=AT + dt.timedelta(seconds=1),
        restart_count=2,
        requeue=False,
    ),
    "array element with dependencies": row(
        array_id=5,
        array_index=2,
        dependencies=[d.to_json() for d in parse_dependencies("afterok:1:2,afterany:3+5")],
    ),
    "any-of dependencies": row(
        dependencies=[d.to_json() for d in parse_dependencies("afterok:1?afternotok:2")]
    ),
    "on a site, staged": row(
        pool="hpc1/gpu", data="imagenet", stage=True, environment="torch", image="cuda"
    ),
    "local pool": row(pool="big"),
    "a notebook, unicode": row(kind="notebook", name="ñotebook", command=["jupyter", "lab", "é"]),
    "no constraints column": row(constraints=None),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_the_bytes_are_the_models(name: str) -> None:
    r = ROWS[name]
    model = JobOut(**_job_fields(r, r.tenant_name, r.user_name, r.vc_name))
    assert JOB_PAGE.dump_json([listed_job(r)]) == MODELS.dump_json([model])


def test_a_page_of_many_is_the_models_page() -> None:
    rows = list(ROWS.values())
    models = [JobOut(**_job_fields(r, r.tenant_name, r.user_name, r.vc_name)) for r in rows]
    assert JOB_PAGE.dump_json([listed_job(r) for r in rows]) == MODELS.dump_json(models)


def test_the_fields_are_the_models_in_its_order() -> None:
    # A field added to JobOut must be added here too (and the bytes test above covers it).
    assert list(JobWire.__annotations__) == list(JobOut.model_fields)


def test_rows_are_read_in_the_queries_column_order() -> None:
    assert tuple(c.key for c in LISTED_COLUMNS) == LISTED_NAMES
    assert tuple(c.key for c in DETAIL_COLUMNS) == (*LISTED_NAMES, "env", "workdir")


def detailed(env: dict[str, str], workdir: str | None, **changes: Any) -> Any:
    return Detailed(*row(**changes), env, workdir)


def event(**changes: Any) -> Any:
    fields = {"at": AT, "from_state": None, "to_state": "pending", "reason": "", "actor": "alice"}
    return Event(**(fields | changes))


def task(**changes: Any) -> Any:
    fields: dict[str, Any] = {
        "attempt": 0,
        "index": 0,
        "node": "n1",
        "outcome": None,
        "exit_code": None,
        "message": "",
        "started_at": AT,
        "finished_at": None,
    }
    return Task(**(fields | changes))


DETAILS = {
    "pending, nothing yet": JobDetail(detailed(env={}, workdir=None), [event()], []),
    "ended, two attempts": JobDetail(
        detailed(state="succeeded", env={"LR": "0.1", "É": "ü"}, workdir="/home/alice/run"),
        [
            event(),
            event(from_state="pending", to_state="running", reason="started", actor="system"),
            event(from_state="running", to_state="succeeded", reason="exited with code 0"),
        ],
        [
            task(outcome=TaskOutcome.LOST, message="node lost", finished_at=AT),
            task(attempt=1, index=1, node="n2", outcome=TaskOutcome.EXITED, exit_code=0),
        ],
    ),
}


@pytest.mark.parametrize("name", list(DETAILS))
def test_the_detail_bytes_are_the_models(name: str) -> None:
    detail = DETAILS[name]
    job = detail.job
    model = JobDetailOut(
        **_job_fields(job, job.tenant_name, job.user_name, job.vc_name),
        env=job.env,
        workdir=job.workdir,
        events=[EventOut.model_validate(e) for e in detail.events],
        task_runs=[TaskOut.model_validate(t) for t in detail.tasks],
    )
    assert JOB_DETAIL.dump_json(detailed_job(detail)) == TypeAdapter(JobDetailOut).dump_json(model)


def test_the_detail_fields_are_the_models_in_its_order() -> None:
    assert list(JobDetailWire.__annotations__) == list(JobDetailOut.model_fields)
    assert list(EventWire.__annotations__) == list(EventOut.model_fields)
    assert list(TaskWire.__annotations__) == list(TaskOut.model_fields)
