"""``/api/v1/notebooks``: start, list, show and stop JupyterLab notebooks (services.notebooks)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.common import Name, ResourcesOut
from virtuai.api.schemas.notebooks import NotebookCreate, NotebookOut
from virtuai.domain.notebooks import base_path
from virtuai.domain.resources import Resources
from virtuai.domain.units import (
    MILLI,
    MIN_CPU_MILLI,
    MIN_MEMORY,
    parse_cpu,
    parse_duration,
    parse_memory,
)
from virtuai.services import notebooks as service
from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import JobRow

router = APIRouter(prefix="/api/v1/notebooks", tags=["notebooks"])
UserQuery = Annotated[Name | None, Query(description="another user's (admins, tenant members)")]


def notebook_to_api(row: JobRow, request: Request, default_idle_s: int) -> NotebookOut:
    path = base_path(row.user.name, row.name)
    return NotebookOut(
        id=row.id,
        name=row.name,
        tenant=row.tenant.name,
        user=row.user.name,
        state=row.state,
        reason=row.reason,
        path=path,
        url=str(request.base_url).rstrip("/") + path,
        resources=ResourcesOut(cpu=row.cpu_milli / MILLI, memory=row.memory, gpu=row.gpu),
        time_limit=row.walltime_s,
        environment=row.environment,
        idle_timeout=row.tenant.notebook_idle_timeout_s or default_idle_s,
        submitted_at=row.submitted_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        last_activity_at=row.activity_at,
    )


def _idle(context: Context) -> int:
    return 3600 if context.notebooks is None else context.notebooks.idle_timeout_s


@router.post("", status_code=status.HTTP_201_CREATED)
def start_notebook(
    body: NotebookCreate, request: Request, caller: CallerDep, context: Context
) -> NotebookOut:
    """Start a notebook.  409 naming `environment` while its environment is being built."""
    resources = body.resources
    start = service.NotebookStart(
        tenant=body.tenant,
        name=body.name,
        per_task=None
        if resources is None
        else Resources(
            cpu_milli=parse_cpu(resources.cpu, field="resources.cpu", minimum=MIN_CPU_MILLI),
            memory=parse_memory(resources.memory, field="resources.memory", minimum=MIN_MEMORY),
            gpu=resources.gpu,
        ),
        walltime_s=None if body.time is None else parse_duration(body.time, field="time"),
        priority=body.priority,
        environment=body.environment,
        vc=body.vc,
    )
    now = context.clock.now()
    with transaction(context.sessions) as session:
        created = service.prepare_environment(
            session,
            caller,
            body.tenant,
            body.environment,
            context.notebooks,
            context.environments,
            now,
        )
    if created:
        context.wake.set()  # the builder starts at once
    with transaction(context.sessions) as session:
        row = service.start_notebook(session, caller, start, context.rules, context.notebooks, now)
        out = notebook_to_api(row, request, _idle(context))
    context.wake.set()
    return out


@router.get("")
def list_notebooks(
    request: Request,
    caller: CallerDep,
    context: Context,
    all_users: Annotated[bool, Query(alias="all", description="every visible user's")] = False,
    finished: Annotated[bool, Query(description="also the ended ones")] = False,
) -> list[NotebookOut]:
    with read_transaction(context.sessions) as session:
        rows = service.list_notebooks(
            session, caller, everyone=all_users, include_finished=finished
        )
        return [notebook_to_api(r, request, _idle(context)) for r in rows]


@router.get("/{name}")
def get_notebook(
    name: str, request: Request, caller: CallerDep, context: Context, user: UserQuery = None
) -> NotebookOut:
    with read_transaction(context.sessions) as session:
        row = service.get_notebook(session, caller, name, user)
        return notebook_to_api(row, request, _idle(context))


@router.delete("/{name}")
def stop_notebook(
    name: str, request: Request, caller: CallerDep, context: Context, user: UserQuery = None
) -> NotebookOut:
    """Stop a notebook (SIGTERM: Jupyter shuts its kernels down); its home stays."""
    with transaction(context.sessions) as session:
        row = service.stop_notebook(session, caller, name, context.clock.now(), user)
        out = notebook_to_api(row, request, _idle(context))
    context.wake.set()
    return out
