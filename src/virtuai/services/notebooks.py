"""Notebooks: JupyterLab as a workload, one per user and name, behind the proxy.

A notebook is a job of kind ``notebook`` (one task), so it is admitted, placed,
accounted and preempted as jobs are: under the tenant's quota and fair share,
visible in ``jobs`` and ``usage``.  Its command is ``domain.notebooks``'
launcher, run by the Python of its environment:

* ``--env NAME``: a ready environment of the tenant that has JupyterLab;
* else the server's ``notebooks.python`` when set (an interpreter with JupyterLab);
* else the tenant's environment ``notebook``, created on first use from
  ``notebooks.requirements``: until it is ready, starting answers 409 naming
  the field ``environment`` (the CLI waits for the build and tries again).

The notebook runs as the tenant's Unix user with ``HOME`` its user's
persistent directory ``<workspaces>/<tenant>/home/<user>`` (made by the
launcher as that user), so files outlive the notebook.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.notebooks import DEFAULT_NAME, HOME_SUBDIR, KIND, launch_command
from virtuai.domain.pyenvs import BASE_PATH, EnvOptions
from virtuai.domain.resources import Resources
from virtuai.domain.workload import FINISHED_STATES
from virtuai.errors import Conflict, InvalidRequest, NotFound, Unavailable
from virtuai.services.access import Caller
from virtuai.services.environments import create_environment, named_environment
from virtuai.services.jobs import JobRequest, submit_job
from virtuai.services.planning import SchedulingRules
from virtuai.store.models import EnvironmentRow, JobRow, TenantRow, UserRow
from virtuai.store.tenancy import get_tenant_row
from virtuai.store.transitions import request_cancel

DEFAULT_ENV = "notebook"  # the tenant's environment built on first use
_FINISHED = frozenset(s.value for s in FINISHED_STATES)


@dataclass(frozen=True, slots=True)
class NotebookOptions:
    """The server's notebook settings (``settings.NotebookSettings``)."""

    workspaces_dir: Path
    python: str | None = None
    requirements: str = "jupyterlab"
    default_time_s: int = 8 * 3600
    idle_timeout_s: int = 3600


@dataclass(frozen=True, slots=True)
class NotebookStart:
    tenant: str | None
    name: str | None
    per_task: Resources | None
    walltime_s: int | None
    priority: str
    environment: str | None
    vc: str | None = None


def home_dir(options: NotebookOptions, tenant: str, user: str) -> str:
    return str(options.workspaces_dir / tenant / HOME_SUBDIR / user)


def start_notebook(
    session: Session,
    caller: Caller,
    request: NotebookStart,
    rules: SchedulingRules,
    options: NotebookOptions | None,
    now: dt.datetime,
) -> JobRow:
    opts = _require(options)
    name = request.name or DEFAULT_NAME
    tenant_name = caller.default_tenant(request.tenant)
    caller.require_submit(tenant_name)
    tenant = get_tenant_row(session, tenant_name)
    if request.vc is not None:
        raise InvalidRequest(
            "notebooks run on the platform's nodes; in a virtual cluster use `vc exec`",
            field="vc",
        )
    live = live_notebook(session, caller.user_id, name)
    if live is not None:
        raise Conflict(
            f"you already have a notebook {name} (job {live.id}, {live.state}): stop it or "
            "choose another name",
            field="name",
        )
    python, env, environment = _interpreter(session, tenant, request.environment, opts)
    home = home_dir(opts, tenant_name, caller.name)
    job_request = JobRequest(
        tenant=tenant_name,
        name=name,
        command=launch_command(python, caller.name, name, home),
        per_task=request.per_task,
        tasks=1,
        walltime_s=request.walltime_s or min(opts.default_time_s, rules.max_walltime_s),
        priority=request.priority,
        env=env,
        workdir=None,  # the tenant's workspace; the launcher makes and enters the home
        environment=environment,
        kind=KIND,
    )
    return submit_job(session, caller, job_request, rules, now)


def _interpreter(
    session: Session, tenant: TenantRow, environment: str | None, opts: NotebookOptions
) -> tuple[str, dict[str, str], str | None]:
    """The Python that runs JupyterLab, the job's variables, and the environment's name."""
    if environment is None and opts.python is not None:
        bindir = str(Path(opts.python).parent)
        return opts.python, {"PATH": f"{bindir}:{BASE_PATH}"}, None
    name = environment or DEFAULT_ENV
    row = named_environment(session, tenant, name)
    if row.state == "building":
        raise Conflict(
            f"environment {name} of tenant {tenant.name} is being built "
            f"(`virtuai env logs {name} -f`); start the notebook when it is ready",
            field="environment",
        )
    if row.state != "ready":
        raise InvalidRequest(
            f"environment {name} is {row.state}: {row.reason}", field="environment"
        )
    if _lacks_jupyter(Path(row.path)):
        raise InvalidRequest(
            f"environment {name} has no JupyterLab (no jupyter_server in it): create one "
            "whose requirements include jupyterlab, or leave --env out for the tenant's "
            f"`{DEFAULT_ENV}` environment",
            field="environment",
        )
    return f"{row.path}/bin/python", {}, name


def _lacks_jupyter(root: Path) -> bool:
    """Whether a built environment certainly has no Jupyter server to run (else the job
    would start and fail at once with ModuleNotFoundError).  An environment not on this
    machine, or one this process cannot read, is given the benefit of the doubt."""
    try:
        sites = list(root.glob("lib/python3*/site-packages"))
        return bool(sites) and not any((site / "jupyter_server").is_dir() for site in sites)
    except OSError:
        return False


def prepare_environment(
    session: Session,
    caller: Caller,
    tenant: str | None,
    environment: str | None,
    options: NotebookOptions | None,
    env_options: EnvOptions | None,
    now: dt.datetime,
) -> bool:
    """Record the tenant's default notebook environment if it is needed and missing (its own
    transaction: the build goes on even though this start is refused until it is ready).
    Returns whether one was recorded."""
    opts = _require(options)
    if environment is not None or opts.python is not None:
        return False
    tenant_name = caller.default_tenant(tenant)
    caller.require_submit(tenant_name)
    row = get_tenant_row(session, tenant_name)
    exists = session.scalar(
        select(EnvironmentRow.id).where(
            EnvironmentRow.tenant_id == row.id, EnvironmentRow.name == DEFAULT_ENV
        )
    )
    if exists is not None:
        return False
    create_environment(
        session,
        caller,
        env_options,
        tenant=tenant_name,
        name=DEFAULT_ENV,
        requirements=opts.requirements + "\n",
        pyproject=None,
        python=None,
        now=now,
    )
    return True


def live_notebook(session: Session, user_id: int, name: str) -> JobRow | None:
    return session.scalar(
        select(JobRow).where(
            JobRow.user_id == user_id,
            JobRow.kind == KIND,
            JobRow.name == name,
            JobRow.state.not_in(_FINISHED),
        )
    )


def list_notebooks(
    session: Session, caller: Caller, *, everyone: bool = False, include_finished: bool = False
) -> list[JobRow]:
    """The caller's notebooks; ``everyone``: all the caller may see (admins: all)."""
    query = select(JobRow).join(TenantRow).where(JobRow.kind == KIND).order_by(JobRow.id)
    if not include_finished:
        query = query.where(JobRow.state.not_in(_FINISHED))
    if not everyone:
        query = query.where(JobRow.user_id == caller.user_id)
    elif not caller.is_admin:
        query = query.where(TenantRow.name.in_(list(caller.roles)))
    return list(session.scalars(query))


def get_notebook(session: Session, caller: Caller, name: str, user: str | None = None) -> JobRow:
    """A live notebook of the caller (or, for admins and tenant members, of ``user``)."""
    owner_id = caller.user_id
    if user is not None and user != caller.name:
        found = session.scalar(select(UserRow.id).where(UserRow.name == user))
        if found is None:
            raise NotFound(f"notebook {user}/{name} not found", field="name")
        owner_id = found
    row = live_notebook(session, owner_id, name)
    if row is None or not caller.can_see(row.tenant.name):
        raise NotFound(f"notebook {name} not found", field="name")
    return row


def stop_notebook(
    session: Session, caller: Caller, name: str, now: dt.datetime, user: str | None = None
) -> JobRow:
    """Stop a notebook (its owner, an owner of its tenant, or an administrator)."""
    row = get_notebook(session, caller, name, user)
    if row.user_id != caller.user_id:
        caller.require_owner(row.tenant.name, "stop another user's notebook")
    request_cancel(session, row, now=now, actor=caller.name)
    return row


def _require(options: NotebookOptions | None) -> NotebookOptions:
    if options is None:
        raise Unavailable("this server does not run notebooks")
    return options
