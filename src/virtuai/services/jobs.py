"""Submitting, listing, cancelling jobs and reading their logs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import BindParameter, Integer, Row, Select, Table, bindparam, insert, or_, select
from sqlalchemy.orm import Session

from virtuai.domain.arrays import ArraySpec
from virtuai.domain.cluster import parse_constraint
from virtuai.domain.datasets import DATA_ENV, needs_copy
from virtuai.domain.dependencies import Dependency, DependencyKind
from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.domain.sites import site_of_pool
from virtuai.domain.tenancy import Quota
from virtuai.domain.units import MIN_CPU_MILLI, MIN_MEMORY
from virtuai.domain.vcluster import VcState, vnode_hostname
from virtuai.domain.workload import JobState, PriorityClass
from virtuai.drivers.base import Driver, LogStream
from virtuai.errors import Conflict, InvalidRequest, NotFound, Unschedulable
from virtuai.scheduler import Plan, never_reason
from virtuai.scheduler.snapshot import NodeState, PendingJob, Snapshot, TenantState
from virtuai.services.access import Caller
from virtuai.services.accounts import require_enabled_tenant
from virtuai.services.datasets import JobData, job_data
from virtuai.services.environments import job_environment
from virtuai.services.images import job_image
from virtuai.services.planning import (
    SchedulingRules,
    plan_job,
    probe,
    reject_if_never_runs,
)
from virtuai.services.sitechoice import SiteChoice, choose_site
from virtuai.services.submitbasis import SubmitBasis, SubmitBasisCache, TenantRef, read_basis
from virtuai.services.vclusters import VcRuntimeAccess, live_vc, whole_node
from virtuai.store.inventory import allowed_nodes
from virtuai.store.models import (
    JobEventRow,
    JobRow,
    TaskRow,
    TenantRow,
    UserRow,
    VirtualClusterRow,
)
from virtuai.store.tenancy import get_tenant_row
from virtuai.store.transitions import record_creation, request_cancel, switch_job_state

MAX_LOG_CHUNK = 1024 * 1024
DEFAULT_PER_TASK = Resources(cpu_milli=1000, memory=2**30)  # as the API's ResourcesIn
_MEMO = "virtuai_submit_memo"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated submission, in domain units (built by the API from ``JobCreate``)."""

    tenant: str | None
    name: str | None
    command: tuple[str, ...]
    per_task: Resources | None  # None: DEFAULT_PER_TASK, or in a virtual cluster a whole node
    tasks: int | None  # None: 1, or in a virtual cluster one per node
    walltime_s: int
    priority: str
    env: Mapping[str, str]
    workdir: str | None
    array: ArraySpec | None = None
    dependencies: tuple[Dependency, ...] = ()
    checkpoint_signal: int = 15
    checkpoint_grace_s: int | None = None
    requeue: bool = True
    vc: str | None = None  # the name of the tenant's virtual cluster to run in
    node_class: str | None = None  # light | fat | gpu
    constraints: tuple[str, ...] = ()  # node labels: key=value or a bare name
    site: str | None = None  # a site's name, "any", or None: this platform's own nodes
    environment: str | None = None  # a ready Python environment of the tenant
    image: str | None = None  # an image whose root the job runs over (a sandbox)
    data: str | None = None  # a dataset of the tenant: the job runs where it is
    stage: bool = False  # ... or where it asked, once the data is copied there
    kind: str = "job"  # job | notebook (services.notebooks)
    host_port: int | None = None  # a fixed port each task holds on its node (a service's)


@dataclass(frozen=True, slots=True)
class JobDetail:
    """A job in detail, as rows (``DETAIL_COLUMNS``, ``EVENT_COLUMNS``, ``TASK_COLUMNS``)."""

    job: Sequence[Any]
    events: Sequence[Sequence[Any]]
    tasks: Sequence[Sequence[Any]]


def default_job_name(command: Sequence[str]) -> str:
    """``python train.py`` -> ``python``; anything unnameable -> ``job``."""
    base = command[0].rsplit("/", 1)[-1].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")[:63].strip("-")
    return name or "job"


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A request checked and completed: the columns of its job(s), before the insert."""

    tenant: TenantRef
    vc: VirtualClusterRow | None
    request: JobRequest  # with its defaults (per task, tasks) and chosen site
    columns: dict[str, Any]  # every column of a job of the request, but ids and array
    held: bool  # it waits for the end of a job that has not ended (``_check_dependencies``)


def submit_job(
    session: Session,
    caller: Caller,
    request: JobRequest,
    rules: SchedulingRules,
    now: dt.datetime,
    images: VcRuntimeAccess | None = None,
    basis: SubmitBasisCache | None = None,
) -> JobRow:
    """Record a pending job.  ``images``: where ``request.image`` is looked up (the
    virtual-cluster runtime); ``None``: this server offers no images.  ``basis``: what
    every submit reads, kept between transactions (``services.submitbasis``); None: read
    once per transaction."""
    prepared = _prepare(session, caller, request, rules, now, images, basis)
    request = prepared.request
    indices: Sequence[int | None] = request.array.indices if request.array else [None]
    first: JobRow | None = None
    for index in indices:
        job = JobRow(
            **prepared.columns,
            array_id=first.id if first is not None else None,
            array_index=index,
        )
        session.add(job)
        session.flush()
        if first is None:
            first = job
            if index is not None:
                job.array_id = job.id  # an array is named by its first element's id
        record_creation(session, job, now=now, actor=caller.name)
    assert first is not None
    return first


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    """One job just recorded by ``submit_one``: its columns, its tenant's and VC's names."""

    columns: Mapping[str, Any]  # every column a job's answer reads, its id included
    tenant: str
    vc: str | None
    held: bool  # it cannot start before a job it depends on ends: no need to wake the loops

    def __getattr__(self, name: str) -> Any:  # read as a row is: job.id, job.state...
        try:
            return self.columns[name]
        except KeyError:
            raise AttributeError(name) from None


# Columns an insert leaves to their defaults whose values a job's answer shows.
_INSERT_DEFAULTS = {
    "exit_code": None,
    "restart_count": 0,
    "queue_position": None,
    "expected_start_at": None,
    "started_at": None,
    "finished_at": None,
}


def submit_one(
    session: Session,
    caller: Caller,
    request: JobRequest,
    rules: SchedulingRules,
    now: dt.datetime,
    images: VcRuntimeAccess | None = None,
    basis: SubmitBasisCache | None = None,
) -> SubmittedJob:
    """``submit_job`` for a request that is not an array, without the ORM's unit of work:
    two inserts (the job, its creation event), each a cached statement.  The same checks,
    the same columns (the database's triggers set ``change_seq`` as for any insert)."""
    if request.array is not None:
        raise ValueError("submit_one takes one job: submit_job records arrays")
    prepared = _prepare(session, caller, request, rules, now, images, basis)
    columns = {**prepared.columns, "array_id": None, "array_index": None}
    connection = session.connection()
    key = connection.execute(_INSERT_JOB, columns).inserted_primary_key
    assert key is not None
    job_id = key[0]
    connection.execute(
        _INSERT_EVENT,
        {
            "job_id": job_id,
            "at": now,
            "from_state": None,
            "to_state": columns["state"],
            "reason": "submitted",
            "actor": caller.name,
        },
    )
    vc = prepared.vc
    return SubmittedJob(
        {**_INSERT_DEFAULTS, **columns, "id": job_id},
        prepared.tenant.name,
        None if vc is None else vc.name,
        prepared.held,
    )


_INSERT_JOB = insert(cast(Table, JobRow.__table__))
_INSERT_EVENT = insert(cast(Table, JobEventRow.__table__))


def _prepare(
    session: Session,
    caller: Caller,
    request: JobRequest,
    rules: SchedulingRules,
    now: dt.datetime,
    images: VcRuntimeAccess | None,
    basis_cache: SubmitBasisCache | None,
) -> _Prepared:
    """Every check of a submit, and the columns of its job."""
    if basis_cache is None:
        basis = _in_transaction(session, "basis", lambda: read_basis(session, rules, now))
        return _prepare_on(session, caller, request, rules, now, images, basis)
    try:
        return _prepare_on(
            session, caller, request, rules, now, images, basis_cache.get(session, now)
        )
    except (NotFound, Conflict, Unschedulable):
        # A kept basis may miss another server's change of the last second (a tenant
        # created or enabled, a quota raised, a node added): a refusal is only given on
        # what the database says now.  Refusals are rare; the read costs them alone.
        basis = basis_cache.refresh(session, now)
        return _prepare_on(session, caller, request, rules, now, images, basis)


def _prepare_on(
    session: Session,
    caller: Caller,
    request: JobRequest,
    rules: SchedulingRules,
    now: dt.datetime,
    images: VcRuntimeAccess | None,
    basis: SubmitBasis,
) -> _Prepared:
    tenant_name = caller.default_tenant(request.tenant)
    caller.require_submit(tenant_name)
    tenant = basis.tenants.get(tenant_name)
    if tenant is None or tenant.deleted_at is not None:
        raise NotFound(f"tenant {tenant_name!r} not found", field="tenant")
    require_enabled_tenant(tenant)
    priority = rules.priority(request.priority)
    rules.check_walltime(request.walltime_s)
    vc = None if request.vc is None else _target_vc(session, _row(session, tenant), request.vc)
    request = _with_defaults(request, vc)
    per_task, tasks = request.per_task, request.tasks
    assert per_task is not None and tasks is not None
    # The API refuses requests below the minimums; this guards every other way in.
    if per_task.cpu_milli < MIN_CPU_MILLI or per_task.memory < MIN_MEMORY:
        raise InvalidRequest(
            "a job must ask for at least 1m CPU and 1Mi memory per task", field="resources"
        )
    if request.stage and request.data is None:
        raise InvalidRequest("--stage copies the job's data: give data too", field="stage")
    pool: str | None = None
    data: JobData | None = None
    if vc is None and request.data is not None:
        data = job_data(session, _row(session, tenant), request.data, request.stage, request.site)
        request = dataclasses.replace(request, site=data.placement.site)
    elif request.data is not None:
        raise InvalidRequest("a job in a virtual cluster reads its cluster's /shared", field="data")
    if vc is None:
        _check_targeting(request, rules)
        allowed = allowed_nodes(
            basis.nodes,
            request.node_class,
            request.constraints,
            walltime_s=request.walltime_s,
            max_walltime_by_class=rules.max_walltime_by_class,
        )
        job_probe = probe_of(tenant.name, request, priority, now, allowed)
        pool = choose_site(session, rules, request.site, job_probe, now).pool
        job_probe = dataclasses.replace(job_probe, pool=pool)
        reject_if_never_runs(session, rules, job_probe, now, basis.at(now))
    elif request.site is not None:
        raise InvalidRequest(
            "a job in a virtual cluster runs on its nodes, not a site", field="site"
        )
    else:
        _reject_if_never_runs_in(vc, probe_of(tenant.name, request, priority, now))
    held = _check_dependencies(session, caller, request.dependencies)
    if request.image is not None:
        _check_image(request, vc, images)
    env = dict(request.env)
    if request.environment is not None:
        if vc is not None or request.site is not None:
            raise InvalidRequest(
                "environments are built on this server: not for jobs in a virtual cluster "
                "or on a site",
                field="environment",
            )
        env = job_environment(
            session, _row(session, tenant), request.environment, env, image=request.image
        )
    copy = data is not None and needs_copy(data.dataset.site, request.stage, site_of_pool(pool))
    if data is not None and not copy:
        env[DATA_ENV] = data.dataset.path
    elif copy:
        env.pop(DATA_ENV, None)  # set by the staging loop once the copy is made, not before
    columns: dict[str, Any] = {
        "tenant_id": tenant.id,
        "user_id": caller.user_id,
        "name": request.name or default_job_name(request.command),
        "kind": request.kind,
        "host_port": request.host_port,
        "state": JobState.PENDING,
        "reason": "waiting for the scheduler",
        "command": list(request.command),
        "env": env,
        "environment": request.environment,
        "image": request.image,
        "workdir": request.workdir,
        "cpu_milli": per_task.cpu_milli,
        "memory": per_task.memory,
        "gpu": per_task.gpu,
        "tasks": tasks,
        "walltime_s": request.walltime_s,
        "priority_class": priority.name,
        "priority": priority.value,
        "placement": [],
        "dependencies": [d.to_json() for d in request.dependencies],
        "checkpoint_signal": request.checkpoint_signal,
        "checkpoint_grace_s": request.checkpoint_grace_s,
        "requeue": request.requeue,
        "array_max_running": request.array.max_running if request.array else None,
        "vc_id": None if vc is None else vc.id,
        "node_class": request.node_class,
        "constraints": list(request.constraints),
        "pool": pool,
        "data": request.data,
        "stage": copy,  # it waits for a copy of its data (control.staging)
        "submitted_at": now,
        "updated_at": now,
    }
    return _Prepared(tenant, vc, request, columns, held)


def _row(session: Session, tenant: TenantRef) -> TenantRow:
    """The tenant's row, for the less common paths that read more of it (VCs, data...)."""
    row = session.get(TenantRow, tenant.id)
    if row is None:  # removed since the basis was read
        raise NotFound(f"tenant {tenant.name!r} not found", field="tenant")
    return row


def _in_transaction(session: Session, key: str, read: Callable[[], T]) -> T:
    """``read()``, once per transaction: the submits of one group commit
    (store.groupcommit), or of one bulk request, share the rows every submit reads (the
    tenant, the nodes, the capacity).  Nothing a submit writes changes them, and the
    next transaction reads them afresh."""
    current = session.get_transaction()
    memo = session.info.get(_MEMO)
    if memo is None or memo[0] is not current:
        memo = (current, {})
        session.info[_MEMO] = memo
    values: dict[str, Any] = memo[1]
    if key not in values:
        values[key] = read()
    found: T = values[key]
    return found


def _check_image(
    request: JobRequest, vc: VirtualClusterRow | None, images: VcRuntimeAccess | None
) -> None:
    if vc is not None:
        raise InvalidRequest(
            "a job in a virtual cluster runs on the cluster's image: drop image or vc",
            field="image",
        )
    if request.site is not None:
        raise InvalidRequest("images are on this server's machines, not on sites", field="image")
    job_image(images, str(request.image))


def _check_targeting(request: JobRequest, rules: SchedulingRules) -> None:
    """Valid constraints, and a time limit within the chosen class's cap."""
    for item in request.constraints:
        parse_constraint(item)
    cap = rules.max_walltime_by_class.get(request.node_class or "")
    if cap is not None and request.walltime_s > cap:
        raise InvalidRequest(
            f"time: {request.walltime_s}s is above the {cap}s limit of class {request.node_class}",
            field="time",
        )


_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
_DEPENDED_ON = (
    select(JobRow.id, JobRow.array_id, TenantRow.name, JobRow.state)
    .join(TenantRow)
    .where(or_(JobRow.id.in_(_IDS), JobRow.array_id.in_(_IDS)))
)
# The common case, one job depended on: no list to expand into the statement at each call.
_ID: BindParameter[int] = bindparam("id")
_DEPENDED_ON_ONE = (
    select(JobRow.id, JobRow.array_id, TenantRow.name, JobRow.state)
    .join(TenantRow)
    .where(or_(JobRow.id == _ID, JobRow.array_id == _ID))
)
# Terms that wait for the end of the job they name: while it has not ended, a job with
# such a term (not one of an any-of list) cannot start.
_WAIT_FOR_END = frozenset(
    {
        DependencyKind.AFTER_OK,
        DependencyKind.AFTER_ANY,
        DependencyKind.AFTER_NOT_OK,
        DependencyKind.AFTER_CORR,
    }
)


def _check_dependencies(
    session: Session, caller: Caller, dependencies: Sequence[Dependency]
) -> bool:
    """Every job depended on must exist and be visible to the caller (jobs or arrays).

    True: the job surely cannot start now, one of the jobs it waits the end of (a
    single job, not an array) has not ended: the scheduler need not be woken for it,
    that job's end will (and the next pass sees it anyway)."""
    wanted = {d.job_id for d in dependencies if d.kind is not DependencyKind.SINGLETON}
    if not wanted:
        return False
    # Built once: a statement per call cost more than the query (its cache key, the
    # ``in_`` coercions).  The jobs it looks for are flushed already (no autoflush needed).
    connection = session.connection()
    if len(wanted) == 1:
        found = connection.execute(_DEPENDED_ON_ONE, {"id": next(iter(wanted))}).all()
    else:
        found = connection.execute(_DEPENDED_ON, {"ids": sorted(wanted)}).all()
    visible = {
        ident
        for job_id, array_id, tenant, _state in found
        if caller.can_see(tenant)
        for ident in (job_id, array_id)
    }
    missing = sorted(wanted - visible)
    if missing:
        raise NotFound(f"dependency: job {missing[0]} not found", field="dependency")
    running = {
        job_id
        for job_id, array_id, _tenant, state in found
        if array_id is None and not JobState(state).is_finished()
    }
    return any(
        d.kind in _WAIT_FOR_END and not d.any_of and d.index is None and d.job_id in running
        for d in dependencies
    )


def _target_vc(session: Session, tenant: TenantRow, name: str) -> VirtualClusterRow:
    vc = live_vc(session, tenant.id, name)
    if vc is None:
        raise NotFound(f"virtual cluster {name} not found in tenant {tenant.name}", field="vc")
    if vc.state == VcState.DELETING.value:
        raise Conflict(f"virtual cluster {name} is being deleted", field="vc")
    return vc


def _with_defaults(request: JobRequest, vc: VirtualClusterRow | None) -> JobRequest:
    """Outside a cluster: 1 task of ``DEFAULT_PER_TASK``; inside: one whole node per task and
    a task per node.  A cluster's gang has at most one task per node."""
    if vc is None:
        return dataclasses.replace(
            request, per_task=request.per_task or DEFAULT_PER_TASK, tasks=request.tasks or 1
        )
    tasks = request.tasks or vc.nodes
    if tasks > vc.nodes:
        raise Unschedulable(
            f"virtual cluster {vc.name} has {vc.nodes} nodes: a job in it has at most "
            f"{vc.nodes} tasks, one per node",
            field="tasks",
        )
    return dataclasses.replace(request, per_task=request.per_task or whole_node(vc), tasks=tasks)


def _reject_if_never_runs_in(vc: VirtualClusterRow, job: PendingJob) -> None:
    """The submit-time check against the cluster's own (empty) nodes, in the scheduler's words."""
    node = Resources(vc.cpu_milli, vc.memory, vc.gpu)
    gpus = tuple(GpuDevice(index=i, model="", memory=0) for i in range(vc.gpu))
    nodes = tuple(
        NodeState(Node(vnode_hostname(vc.name, i), "vc", "vc", node, gpus)) for i in range(vc.nodes)
    )
    snapshot = Snapshot(nodes=nodes, tenants=(TenantState(job.tenant, Quota()),), pending=())
    reason = never_reason(snapshot, job)
    if reason is not None:
        raise Unschedulable(f"{reason} (in virtual cluster {vc.name})", field="resources")


def probe_of(
    tenant: str,
    request: JobRequest,
    priority: PriorityClass,
    now: dt.datetime,
    allowed: frozenset[str] | None = None,
) -> PendingJob:
    per_task = request.per_task or DEFAULT_PER_TASK
    ports = frozenset(() if request.host_port is None else (request.host_port,))
    return probe(
        tenant, per_task, request.tasks or 1, request.walltime_s, priority, now, allowed, ports
    )


def plan_request(
    session: Session,
    caller: Caller,
    request: JobRequest,
    rules: SchedulingRules,
    now: dt.datetime,
) -> tuple[Plan, SiteChoice]:
    """What would happen to this job if it were submitted now, and where it would go (and
    why); nothing is recorded."""
    tenant = caller.default_tenant(request.tenant)
    caller.require_visible(tenant)
    tenant_row = get_tenant_row(session, tenant)
    if request.vc is not None:
        raise InvalidRequest("plan does not answer for jobs in virtual clusters yet", field="vc")
    site = request.site
    data = None
    if request.data is not None:
        data = job_data(session, tenant_row, request.data, request.stage, request.site)
        site = data.placement.site
    job_probe = probe_of(tenant, request, rules.priority(request.priority), now)
    choice = choose_site(session, rules, site, job_probe, now)
    if data is not None:
        where = f"site {data.dataset.site}" if data.dataset.site else "this platform's nodes"
        copied = needs_copy(data.dataset.site, request.stage, choice.site)
        note = f"; its data {data.dataset.name} is on {where}"
        choice = dataclasses.replace(
            choice, why=choice.why + note + (" (copied there first)" if copied else "")
        )
    return plan_job(session, rules, dataclasses.replace(job_probe, pool=choice.pool), now), choice


# What a job's listing shows (``api.routers.jobs``), and nothing more: no environment, no
# scheduler bookkeeping.  Decoding the JSON columns a page never shows, and building ORM
# objects with their identity map, cost more than the query itself.
LISTED_COLUMNS = (
    JobRow.id,
    JobRow.name,
    JobRow.state,
    JobRow.reason,
    JobRow.exit_code,
    JobRow.command,
    JobRow.kind,
    JobRow.cpu_milli,
    JobRow.memory,
    JobRow.gpu,
    JobRow.tasks,
    JobRow.walltime_s,
    JobRow.priority_class,
    JobRow.restart_count,
    JobRow.requeue,
    JobRow.array_id,
    JobRow.array_index,
    JobRow.environment,
    JobRow.image,
    JobRow.node_class,
    JobRow.constraints,
    JobRow.dependencies,
    JobRow.queue_position,
    JobRow.expected_start_at,
    JobRow.placement,
    JobRow.submitted_at,
    JobRow.started_at,
    JobRow.finished_at,
    JobRow.pool,
    JobRow.data,
    JobRow.stage,
    TenantRow.name.label("tenant_name"),
    UserRow.name.label("user_name"),
    VirtualClusterRow.name.label("vc_name"),
)


def list_jobs(
    session: Session,
    caller: Caller,
    tenant: str | None,
    state: str | None,
    limit: int,
    array_id: int | None = None,
    user: str | None = None,
    before_id: int | None = None,
) -> list[Row[Any]]:
    """A page of jobs, newest first: at most ``limit``, with ids below ``before_id`` if given.

    Keyset pagination: the next page starts before the last id of this one, so
    a page costs the same however deep it is.  One query per tenant walks the
    ``(tenant_id, id)`` index backwards and stops at ``limit``; the names of each
    job's tenant, user and virtual cluster come in the same query (``LISTED_COLUMNS``:
    rows, not ORM objects).
    """
    if state is not None and state not in {s.value for s in JobState}:
        raise InvalidRequest(
            f"unknown state {state!r}; use one of {', '.join(s.value for s in JobState)}",
            field="state",
        )
    params: dict[str, object] = {
        "limit": limit,
        "array_id": array_id,
        "state": state,
        "before_id": before_id,
        "user": user,
    }
    # Core, not the ORM: rows are all a page needs, and the ORM's per-statement work
    # (compile state, loading) cost more than the query.
    connection = session.connection()
    if tenant is not None:
        caller.require_visible(tenant)
        tenant_ids: list[int] | None = list(
            connection.execute(_TENANT_ID, {"name": tenant}).scalars()
        )
    elif caller.is_admin:
        tenant_ids = None
    else:
        tenant_ids = list(connection.execute(_TENANT_IDS, {"names": list(caller.roles)}).scalars())
    filters = (array_id is not None, state is not None, before_id is not None, user is not None)
    if tenant_ids is None:
        return list(connection.execute(_page_query(*filters, by_tenant=False), params))
    query = _page_query(*filters, by_tenant=True)
    jobs = [job for tid in tenant_ids for job in connection.execute(query, {**params, "tid": tid})]
    jobs.sort(key=lambda job: job.id, reverse=True)
    return jobs[:limit]


_TENANT_ID = select(TenantRow.id).where(TenantRow.name == bindparam("name"))
_TENANT_IDS = select(TenantRow.id).where(TenantRow.name.in_(bindparam("names", expanding=True)))


@functools.cache
def _page_query(
    array_id: bool, state: bool, before_id: bool, user: bool, *, by_tenant: bool
) -> Select[Any]:
    """The page's statement for one combination of filters, its values bound at execution.

    Built once per combination: SQLAlchemy finds a statement's compiled form by a key it
    derives by walking the statement, which it remembers on the statement object itself; a
    statement built anew for each request was walked each time (its 34 columns and joins).
    """
    query = (
        select(*LISTED_COLUMNS)
        .join(TenantRow, TenantRow.id == JobRow.tenant_id)
        .join(UserRow, UserRow.id == JobRow.user_id)
        .outerjoin(VirtualClusterRow, VirtualClusterRow.id == JobRow.vc_id)
        .order_by(JobRow.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )
    if array_id:
        query = query.where(JobRow.array_id == bindparam("array_id"))
    if state:
        query = query.where(JobRow.state == bindparam("state"))
    if before_id:
        query = query.where(JobRow.id < bindparam("before_id"))
    if user:
        names = select(UserRow.id).where(UserRow.name == bindparam("user"))
        query = query.where(JobRow.user_id.in_(names))
    if by_tenant:
        query = query.where(JobRow.tenant_id == bindparam("tid"))
    return query


def get_job(session: Session, caller: Caller, job_id: int) -> JobRow:
    job = session.get(JobRow, job_id)
    if job is None or not caller.can_see(job.tenant.name):
        raise NotFound(f"job {job_id} not found", field="id")
    return job


def get_job_detail(session: Session, caller: Caller, job_id: int) -> JobDetail:
    """A job, its events and its tasks: three Core queries of statements built once (see
    ``_page_query``), no ORM objects, nor their lazy loads of the tenant, user and vc."""
    connection = session.connection()
    job = connection.execute(_DETAIL, {"id": job_id}).one_or_none()
    if job is None or not caller.can_see(job.tenant_name):
        raise NotFound(f"job {job_id} not found", field="id")
    events = list(connection.execute(_EVENTS, {"id": job_id}))
    tasks = list(connection.execute(_TASKS, {"id": job_id}))
    return JobDetail(job, events, tasks)


# What a job's detail shows beyond its listing (``api.routers.jobs``).
DETAIL_COLUMNS = (*LISTED_COLUMNS, JobRow.env, JobRow.workdir)
EVENT_COLUMNS = (
    JobEventRow.at,
    JobEventRow.from_state,
    JobEventRow.to_state,
    JobEventRow.reason,
    JobEventRow.actor,
)
TASK_COLUMNS = (
    TaskRow.attempt,
    TaskRow.index,
    TaskRow.node,
    TaskRow.outcome,
    TaskRow.exit_code,
    TaskRow.message,
    TaskRow.started_at,
    TaskRow.finished_at,
)
_DETAIL = (
    select(*DETAIL_COLUMNS)
    .join(TenantRow, TenantRow.id == JobRow.tenant_id)
    .join(UserRow, UserRow.id == JobRow.user_id)
    .outerjoin(VirtualClusterRow, VirtualClusterRow.id == JobRow.vc_id)
    .where(JobRow.id == bindparam("id"))
)
_EVENTS = (
    select(*EVENT_COLUMNS).where(JobEventRow.job_id == bindparam("id")).order_by(JobEventRow.id)
)
_TASKS = (
    select(*TASK_COLUMNS)
    .where(TaskRow.job_id == bindparam("id"))
    .order_by(TaskRow.attempt, TaskRow.index)
)


def cancel_job(session: Session, caller: Caller, job_id: int, now: dt.datetime) -> JobRow:
    """Record the wish to cancel; work that never started ends at once, running work is stopped
    by the life-cycle loop (SIGTERM, then SIGKILL after the grace period)."""
    job = get_job(session, caller, job_id)
    caller.require_submit(job.tenant.name)
    state = JobState(job.state)
    if state.is_finished():
        raise Conflict(f"job {job_id} has already ended ({state})", field="id")
    _cancel(session, job, caller.name, now)
    return job


def cancel_array(session: Session, caller: Caller, array_id: int, now: dt.datetime) -> list[JobRow]:
    """Cancel every element of an array that has not ended yet."""
    leader = get_job(session, caller, array_id)
    if leader.array_id != leader.id:
        raise NotFound(f"array {array_id} not found", field="id")
    caller.require_submit(leader.tenant.name)
    elements = list(
        session.scalars(
            select(JobRow).where(JobRow.array_id == array_id).order_by(JobRow.array_index)
        )
    )
    for job in elements:
        if not JobState(job.state).is_finished():
            _cancel(session, job, caller.name, now)
    return elements


def _cancel(session: Session, job: JobRow, actor: str, now: dt.datetime) -> None:
    request_cancel(session, job, now=now, actor=actor)
    session.flush()


@dataclass(frozen=True, slots=True)
class LogChunk:
    data: bytes
    offset: int
    eof: bool


def read_logs(
    session: Session,
    caller: Caller,
    job_id: int,
    task_index: int,
    stream: LogStream,
    offset: int,
    drivers: Mapping[str, Driver],
) -> LogChunk:
    job = get_job(session, caller, job_id)
    if not 0 <= task_index < job.tasks:
        raise InvalidRequest(
            f"job {job_id} has tasks 0 to {job.tasks - 1}; there is no task {task_index}",
            field="task",
        )
    task = session.scalars(
        select(TaskRow)
        .where(TaskRow.job_id == job.id, TaskRow.index == task_index)
        .order_by(TaskRow.attempt.desc())
    ).first()
    if task is None or task.handle is None:
        # Not started yet: nothing to read, and more may come unless the job already ended.
        return LogChunk(b"", offset, JobState(job.state).is_finished())
    driver = drivers.get(task.driver)
    if driver is None:
        raise NotFound(f"the logs of job {job_id} were at {task.driver}, which is gone", field="id")
    data = driver.read_log(task.handle, stream, offset, MAX_LOG_CHUNK)
    full = len(data) == MAX_LOG_CHUNK
    if full:
        data = _cut_at_character_boundary(data)
    ended = task.outcome is not None
    return LogChunk(data, offset + len(data), ended and not full)


def _cut_at_character_boundary(data: bytes) -> bytes:
    """Drop a UTF-8 sequence split by the chunk's end; the next read starts with it whole."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0b1100_0000 != 0b1000_0000:  # not a continuation byte: a sequence starts here
            length = (
                1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            )
            return data if length <= back else data[:-back]
    return data


def requeue_job(
    session: Session, job_id: int, now: dt.datetime, *, caller: Caller | None, attempt: int | None
) -> JobRow:
    """Stop a running job and put it back in the queue (``scontrol requeue``), same id.

    Asked by a user who may submit in the job's tenant (``caller``), or by the
    job itself with its job token (``attempt``: the token's attempt, which must
    be the current one).  Its tasks are stopped as a preemption stops them;
    the life cycle then requeues it, whatever their exit codes.
    """
    if caller is not None:
        job = get_job(session, caller, job_id)
        caller.require_submit(job.tenant.name)
        actor = caller.name
    else:
        found = session.get(JobRow, job_id)
        if found is None or found.attempt != attempt:
            raise NotFound(f"job {job_id} not found", field="id")
        job, actor = found, f"job {job_id}"
    state = JobState(job.state)
    if state not in (JobState.STARTING, JobState.RUNNING):
        raise Conflict(f"job {job_id} is {state}: only a running job can be requeued", field="id")
    if not job.requeue:
        raise Conflict(f"job {job_id} was submitted with --no-requeue", field="id")
    if not switch_job_state(
        session,
        job,
        JobState.PREEMPTING,
        reason="requeue requested (scontrol requeue)",
        now=now,
        actor=actor,
        requeue_requested_at=now,
    ):
        raise Conflict(f"job {job_id} changed state meanwhile; try again", field="id")
    return job
