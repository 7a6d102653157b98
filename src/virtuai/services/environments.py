"""Environments: a tenant's Python environments, built once by the server, shared in the tenant.

The API records what is wanted (a row in ``building``); ``control.environments``
builds it.  Builds are content-addressed: the SHA-256 of the inputs (the
requirement lines and the Python version) names the build directory
``<workspaces>/<tenant>/.virtuai/envs/<digest>``, so the same inputs reuse one
build, whatever the environments' names.  Jobs naming an environment run with
its ``bin`` first on ``PATH`` and ``VIRTUAL_ENV`` set.

An environment may be built *for an image* (``image``): with the image's Python,
in a sandbox over the image's root, for jobs over that image only (a virtual
environment points at the Python that made it, which the host may not have).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.pyenvs import BASE_PATH, EnvOptions, input_digest
from virtuai.domain.workload import FINISHED_STATES
from virtuai.errors import Conflict, InvalidRequest, NotFound, Unavailable
from virtuai.services.access import Caller, scoped_to_tenants
from virtuai.services.images import job_image
from virtuai.services.vclusters import VcRuntimeAccess
from virtuai.store.models import EnvironmentRow, JobRow, ServiceRow, TenantRow
from virtuai.store.tenancy import get_tenant_row

KINDS = ("pip", "pyproject", "python")
PYTHON_RE = re.compile(r"^3\.[0-9]{1,2}$")
MAX_LOG_CHUNK = 1024 * 1024
_FINISHED = frozenset(s.value for s in FINISHED_STATES)


def requirements_from_pyproject(text: str) -> str:
    """The ``[project] dependencies`` of a pyproject.toml, one per line.

    The project's own source is not uploaded, so it is not installed: the
    environment is the one the project declares it needs.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"not valid TOML: {exc}", field="pyproject") from None
    project = data.get("project")
    if not isinstance(project, dict):
        raise InvalidRequest("no [project] table", field="pyproject")
    deps = project.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise InvalidRequest("[project] dependencies must be a list of strings", field="pyproject")
    return "".join(d.strip() + "\n" for d in deps)


def create_environment(
    session: Session,
    caller: Caller,
    options: EnvOptions | None,
    *,
    tenant: str | None,
    name: str,
    requirements: str | None,
    pyproject: str | None,
    python: str | None,
    now: dt.datetime,
    image: str | None = None,
    images: VcRuntimeAccess | None = None,
) -> EnvironmentRow:
    opts = _require(options)
    tenant_name = caller.default_tenant(tenant)
    caller.require_submit(tenant_name)
    tenant_row = get_tenant_row(session, tenant_name)
    if requirements is not None and pyproject is not None:
        raise InvalidRequest("give at most one of requirements and pyproject", field="pyproject")
    if requirements is None and pyproject is None and python is None and image is None:
        raise InvalidRequest("give requirements, pyproject, python or image", field="requirements")
    version = python or opts.default_python
    if not PYTHON_RE.match(version):
        raise InvalidRequest(f"{version!r} is not a Python version such as 3.11", field="python")
    if pyproject is not None:
        kind, lines = "pyproject", requirements_from_pyproject(pyproject)
    elif requirements is not None:
        kind, lines = "pip", requirements
    else:
        kind, lines = "python", ""
    if "\x00" in lines:
        raise InvalidRequest("must not contain NUL characters", field="requirements")
    if image is not None:
        job_image(images, image)  # it exists here (its Python is checked by the build)
    existing = session.scalar(
        select(EnvironmentRow.id).where(
            EnvironmentRow.tenant_id == tenant_row.id, EnvironmentRow.name == name
        )
    )
    if existing is not None:
        raise Conflict(
            f"environment {name} already exists in tenant {tenant_name}: delete it first",
            field="name",
        )
    digest = input_digest(lines, version, image)
    row = EnvironmentRow(
        tenant_id=tenant_row.id,
        name=name,
        kind=kind,
        requirements=lines,
        python=version,
        image=image,
        digest=digest,
        state="building",
        reason="waiting for the builder",
        path=str(opts.build_dir(tenant_name, digest)),
        created_by=caller.name,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def list_environments(session: Session, caller: Caller, tenant: str | None) -> list[EnvironmentRow]:
    query = select(EnvironmentRow).join(TenantRow).order_by(TenantRow.name, EnvironmentRow.name)
    query = scoped_to_tenants(query, caller, tenant)
    return list(session.scalars(query))


def get_environment(
    session: Session, caller: Caller, tenant: str | None, name: str
) -> EnvironmentRow:
    tenant_name = caller.default_tenant(tenant)
    caller.require_visible(tenant_name)
    row = session.scalar(
        select(EnvironmentRow)
        .join(TenantRow)
        .where(TenantRow.name == tenant_name, EnvironmentRow.name == name)
    )
    if row is None:
        raise NotFound(f"environment {name} not found in tenant {tenant_name}", field="name")
    return row


def delete_environment(session: Session, caller: Caller, tenant: str | None, name: str) -> None:
    """Forget an environment no live job uses; the builder removes its directory once no
    other environment of the tenant shares it."""
    row = get_environment(session, caller, tenant, name)
    caller.require_submit(row.tenant.name)
    users = list(
        session.scalars(
            select(JobRow.id)
            .where(
                JobRow.tenant_id == row.tenant_id,
                JobRow.environment == name,
                JobRow.state.not_in(_FINISHED),
            )
            .limit(10)
        )
    )
    if users:
        raise Conflict(
            f"environment {name} is used by live jobs {', '.join(map(str, users))}", field="name"
        )
    # A service at zero replicas has no live job, but its next replica needs the environment.
    services = [
        service.name
        for service in session.scalars(
            select(ServiceRow).where(ServiceRow.tenant_id == row.tenant_id)
        )
        if service.spec.get("environment") == name and service.state != "deleting"
    ]
    if services:
        raise Conflict(
            f"environment {name} is used by the services {', '.join(sorted(services))}: "
            "change or delete them first",
            field="name",
        )
    session.delete(row)


def read_log(options: EnvOptions | None, row: EnvironmentRow, offset: int) -> tuple[str, int]:
    """The build log from ``offset``: the text (at most 1 MiB) and the next offset."""
    path = _require(options).log_path(row.id)
    try:
        with path.open("rb") as f:
            if offset >= os.fstat(f.fileno()).st_size:
                # Nothing there; also past what the file system can seek to (EINVAL, a
                # 500 for ?offset=9007199254740991, found by the fuzzer), as the driver's.
                return "", offset
            f.seek(offset)
            data = f.read(MAX_LOG_CHUNK)
    except FileNotFoundError:
        return "", offset
    return data.decode(errors="replace"), offset + len(data)


def named_environment(session: Session, tenant: TenantRow, name: str) -> EnvironmentRow:
    """Environment ``name`` of ``tenant``, whatever its state; refused naming the field."""
    row = session.scalar(
        select(EnvironmentRow).where(
            EnvironmentRow.tenant_id == tenant.id, EnvironmentRow.name == name
        )
    )
    if row is None:
        raise InvalidRequest(
            f"no environment {name} in tenant {tenant.name} (see `virtuai env list`)",
            field="environment",
        )
    return row


def job_environment(
    session: Session,
    tenant: TenantRow,
    name: str,
    env: Mapping[str, str],
    *,
    image: str | None = None,
) -> dict[str, str]:
    """The variables of a job run in environment ``name``: ``VIRTUAL_ENV``, its ``bin``
    first on ``PATH``; refused (naming the field) unless the environment is ready and was
    built for the job's ``image`` (or, without one, for the host)."""
    row = named_environment(session, tenant, name)
    if row.state != "ready":
        why = f": {row.reason}" if row.reason else ""
        raise InvalidRequest(
            f"environment {name} is {row.state}{why}; a job needs a ready one",
            field="environment",
        )
    if row.image != image:
        built_for = f"image {row.image}" if row.image else "the host's Python"
        wanted = f"image {image}" if image else "the host (no --image)"
        raise InvalidRequest(
            f"environment {name} is built for {built_for}, and this job runs over {wanted}: "
            f"create one with `virtuai env create ... "
            f"{'--image ' + image if image else 'without --image'}`",
            field="environment",
        )
    result = dict(env)
    result["VIRTUAL_ENV"] = row.path
    result["PATH"] = f"{row.path}/bin:{env.get('PATH', BASE_PATH)}"
    return result


def _require(options: EnvOptions | None) -> EnvOptions:
    if options is None:
        raise Unavailable("this server does not build environments")
    return options
