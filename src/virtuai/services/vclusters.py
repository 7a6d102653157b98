"""Creating, listing, suspending, resuming, deleting virtual clusters, and running commands in them.

The API records desired state only (a new ``creating`` cluster, ``suspending``,
``resuming``, ``deleting``); the scheduler admits clusters and
``control.vclusters`` makes the rest true.  Clusters are named per tenant:
a name belongs to the tenant's live cluster (not ``deleted``, not ``failed``)
and is free again afterwards.  Tenant scoping is as for jobs: a foreign name
answers 404 like a missing one, viewers may look but not act.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import selectors
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.resources import Resources
from virtuai.domain.vcluster import LIVE_STATES, VcRequest, VcState
from virtuai.errors import Conflict, InvalidRequest, NotFound, NotOffered
from virtuai.scheduler.snapshot import PendingJob
from virtuai.services.access import Caller, scoped_to_tenants
from virtuai.services.accounts import require_enabled_tenant
from virtuai.services.planning import SchedulingRules, reject_if_never_runs
from virtuai.store.models import TenantRow, VcEventRow, VirtualClusterRow
from virtuai.store.tenancy import get_tenant_row
from virtuai.store.transitions import record_vc_event, switch_vc_state
from virtuai.vcruntime import NodeSpec, VcRuntime, VcSpec, allocate_subnet
from virtuai.vcruntime.ipam import DEFAULT_POOL, DEFAULT_PREFIXLEN

LIVE = [s.value for s in LIVE_STATES]
PROBE_ID = "planned-vc"
READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class VcOptions:
    """What the server's settings say about virtual clusters, as the services need it."""

    subnet_pool: str = DEFAULT_POOL
    subnet_prefixlen: int = DEFAULT_PREFIXLEN
    exec_timeout_s: int = 3600
    priority_class: str = "normal"  # clusters queue with this priority class's value


@dataclass(frozen=True, slots=True)
class VcRuntimeAccess:
    """The runtime, or why this server has none (not root, no overlayfs, disabled)."""

    runtime: VcRuntime | None = None
    unavailable: str = "virtual clusters are not enabled on this server"

    def require(self) -> VcRuntime:
        if self.runtime is None:
            raise NotOffered(self.unavailable)
        return self.runtime


@dataclass(frozen=True, slots=True)
class VcDetail:
    vc: VirtualClusterRow
    events: list[VcEventRow]


def create_vc(
    session: Session,
    caller: Caller,
    tenant_name: str | None,
    request: VcRequest,
    access: VcRuntimeAccess,
    rules: SchedulingRules,
    options: VcOptions,
    now: dt.datetime,
) -> VirtualClusterRow:
    """Record a new cluster waiting for admission; nothing is built before the scheduler
    has admitted all of its nodes within the tenant's quota."""
    tenant_name = caller.default_tenant(tenant_name)
    caller.require_submit(tenant_name)
    tenant = get_tenant_row(session, tenant_name)
    require_enabled_tenant(tenant)
    runtime = access.require()  # a host that cannot run clusters says so before anything
    if request.per_node.cpu_milli <= 0 or request.per_node.memory <= 0:
        raise InvalidRequest("every node needs some CPU and memory", field="resources")
    runtime_id = f"{request.name[:40]}-{secrets.token_hex(4)}"
    used = list(
        session.scalars(select(VirtualClusterRow.subnet).where(VirtualClusterRow.state.in_(LIVE)))
    )
    # Also skip what the host routes already (Docker, a VPN, leftovers): the cluster's
    # build would refuse an overlapping subnet, and the next free one is as good.
    subnet = allocate_subnet(
        [*used, *runtime.host_networks()], options.subnet_pool, options.subnet_prefixlen
    )
    _draft_spec(runtime_id, tenant_name, request, str(subnet)).validate()
    runtime.images.get(request.image)  # NotFound names the image
    if _live(session, tenant.id, request.name) is not None:
        raise Conflict(
            f"virtual cluster {request.name} already exists in tenant {tenant_name}", field="name"
        )
    priority = rules.priority_classes.get(options.priority_class)
    probe = PendingJob(
        id=PROBE_ID,
        tenant=tenant_name,
        priority=priority.value if priority else 0,
        submitted_at=now.timestamp(),
        seq=2**62,
        per_task=request.per_node,
        tasks=request.nodes,
        preemptible=False,
    )
    reject_if_never_runs(session, rules, probe, now)
    vc = VirtualClusterRow(
        tenant_id=tenant.id,
        user_id=caller.user_id,
        name=request.name,
        runtime_id=runtime_id,
        state=VcState.CREATING,
        reason="waiting for the scheduler",
        nodes=request.nodes,
        cpu_milli=request.per_node.cpu_milli,
        memory=request.per_node.memory,
        gpu=request.per_node.gpu,
        image=request.image,
        gateway=request.gateway,
        subnet=str(subnet),
        priority=probe.priority,
        placement=[],
        observed=[],
        requested_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(vc)
    session.flush()
    record_vc_event(session, vc, None, vc.state, "created", now=now, actor=caller.name)
    return vc


def _draft_spec(runtime_id: str, tenant: str, request: VcRequest, subnet: str) -> VcSpec:
    """The runtime's own checks (hostname lengths, node counts, sizes) before recording."""
    node = NodeSpec(request.per_node.cpu_milli, request.per_node.memory)
    return VcSpec(
        id=runtime_id,
        name=request.name,
        tenant=tenant,
        subnet=subnet,
        nodes=(node,) * request.nodes,
        image=request.image,
        gateway=request.gateway,
    )


def _live(session: Session, tenant_id: int, name: str) -> VirtualClusterRow | None:
    return session.scalars(
        select(VirtualClusterRow).where(
            VirtualClusterRow.tenant_id == tenant_id,
            VirtualClusterRow.name == name,
            VirtualClusterRow.state.in_(LIVE),
        )
    ).one_or_none()


def list_vcs(
    session: Session, caller: Caller, tenant: str | None, *, include_deleted: bool = False
) -> list[VirtualClusterRow]:
    query = (
        select(VirtualClusterRow)
        .join(TenantRow, TenantRow.id == VirtualClusterRow.tenant_id)
        .order_by(TenantRow.name, VirtualClusterRow.name, VirtualClusterRow.id)
    )
    query = scoped_to_tenants(query, caller, tenant)
    if not include_deleted:
        query = query.where(VirtualClusterRow.state != VcState.DELETED.value)
    return list(session.scalars(query))


def get_vc(session: Session, caller: Caller, name: str, tenant: str | None) -> VirtualClusterRow:
    """The live cluster of that name, else the latest one that was (history).

    Without ``tenant``, the name is looked up in every tenant the caller sees;
    when several have one, the caller must name the tenant.
    """
    query = (
        select(VirtualClusterRow)
        .join(TenantRow, TenantRow.id == VirtualClusterRow.tenant_id)
        .where(VirtualClusterRow.name == name)
        .order_by(VirtualClusterRow.id.desc())
    )
    query = scoped_to_tenants(query, caller, tenant)
    rows = list(session.scalars(query))
    tenants = {row.tenant_id for row in rows}
    if not rows:
        raise NotFound(f"virtual cluster {name} not found", field="name")
    if len(tenants) > 1:
        names = sorted(row.tenant.name for row in rows)
        raise InvalidRequest(
            f"tenants {', '.join(dict.fromkeys(names))} each have a virtual cluster {name}: "
            "name the tenant",
            field="tenant",
        )
    live = [row for row in rows if row.state in LIVE]
    return live[0] if live else rows[0]


def get_vc_detail(session: Session, caller: Caller, name: str, tenant: str | None) -> VcDetail:
    vc = get_vc(session, caller, name, tenant)
    events = list(
        session.scalars(select(VcEventRow).where(VcEventRow.vc_id == vc.id).order_by(VcEventRow.id))
    )
    return VcDetail(vc, events)


def _acting_on(
    session: Session, caller: Caller, name: str, tenant: str | None, access: VcRuntimeAccess
) -> VirtualClusterRow:
    vc = get_vc(session, caller, name, tenant)
    caller.require_submit(vc.tenant.name)
    access.require()
    return vc


def suspend_vc(
    session: Session,
    caller: Caller,
    name: str,
    tenant: str | None,
    access: VcRuntimeAccess,
    now: dt.datetime,
) -> VirtualClusterRow:
    """Ask for the cluster to be suspended: its jobs are preempted (and requeued), then its
    nodes stop, their disks are kept, and its resources go back to the pool."""
    vc = _acting_on(session, caller, name, tenant, access)
    state = VcState(vc.state)
    if state in (VcState.SUSPENDING, VcState.SUSPENDED):
        return vc
    if state is not VcState.RUNNING:
        raise Conflict(
            f"virtual cluster {vc.name} is {state}; only a running one can be suspended",
            field="name",
        )
    _switch(session, vc, VcState.SUSPENDING, "suspend requested", caller, now)
    return vc


def resume_vc(
    session: Session,
    caller: Caller,
    name: str,
    tenant: str | None,
    access: VcRuntimeAccess,
    now: dt.datetime,
) -> VirtualClusterRow:
    """Ask for a suspended cluster to run again: it waits for admission (possibly onto other
    CPUs and GPUs), then its nodes start with their disks as they were."""
    vc = _acting_on(session, caller, name, tenant, access)
    state = VcState(vc.state)
    if state in (VcState.RESUMING, VcState.RUNNING):
        return vc
    if state is not VcState.SUSPENDED:
        raise Conflict(
            f"virtual cluster {vc.name} is {state}; only a suspended one can be resumed",
            field="name",
        )
    _switch(
        session, vc, VcState.RESUMING, "resume requested: waiting for the scheduler", caller, now,
        requested_at=now,
    )  # fmt: skip
    return vc


def delete_vc(
    session: Session,
    caller: Caller,
    name: str,
    tenant: str | None,
    access: VcRuntimeAccess,
    now: dt.datetime,
) -> VirtualClusterRow:
    """Ask for the cluster to be removed: its jobs are cancelled, then its nodes, network and
    disks are removed.  The row stays (``deleted``) and the name is free again."""
    vc = _acting_on(session, caller, name, tenant, access)
    state = VcState(vc.state)
    if state is VcState.DELETING:
        return vc
    if state is VcState.DELETED:
        raise Conflict(f"virtual cluster {vc.name} is already deleted", field="name")
    _switch(session, vc, VcState.DELETING, "delete requested", caller, now)
    return vc


def _switch(
    session: Session,
    vc: VirtualClusterRow,
    state: VcState,
    reason: str,
    caller: Caller,
    now: dt.datetime,
    **changes: object,
) -> None:
    if not switch_vc_state(
        session, vc, state, reason=reason, now=now, actor=caller.name, **changes
    ):
        raise Conflict(
            f"virtual cluster {vc.name} changed meanwhile (now {vc.state}); try again", field="name"
        )


# -- running commands in nodes --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecTarget:
    runtime_id: str
    index: int
    hostname: str


def exec_target(
    session: Session,
    caller: Caller,
    name: str,
    tenant: str | None,
    index: int,
    access: VcRuntimeAccess,
) -> ExecTarget:
    """Where ``virtuai vc exec`` runs: a node of a running cluster the caller may act in."""
    vc = _acting_on(session, caller, name, tenant, access)
    if vc.state != VcState.RUNNING.value:
        raise Conflict(f"virtual cluster {vc.name} is {vc.state}, not running", field="name")
    if not 0 <= index < vc.nodes:
        raise InvalidRequest(
            f"virtual cluster {vc.name} has nodes 0 to {vc.nodes - 1}; there is no node {index}",
            field="node",
        )
    return ExecTarget(vc.runtime_id, index, f"{vc.name}-{index}")


@dataclass(frozen=True, slots=True)
class Output:
    stream: str  # "stdout" | "stderr"
    data: bytes


@dataclass(frozen=True, slots=True)
class Exited:
    exit_code: int
    message: str = ""


def run_in_node(
    runtime: VcRuntime,
    target: ExecTarget,
    argv: Sequence[str],
    timeout_s: float,
    stdin: bytes | None = None,
) -> Iterator[Output | Exited]:
    """Run ``argv`` in the node as the tenant's unprivileged user, in ``/shared``; yield its
    output as it comes, then how it ended (killed at ``timeout_s``).

    The process is started at once (errors are raised before anything is yielded) and is
    killed if the caller stops reading (the client went away).
    """
    proc = runtime.exec(
        target.runtime_id,
        target.index,
        list(argv),
        cwd="/shared",
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
    )
    if stdin and proc.stdin is not None:
        # Fed by a thread: a command may write much before it reads (pipes hold 64 KiB).
        threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
    return _outputs(proc, timeout_s)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError):
        pipe.write(data)
    with contextlib.suppress(OSError):
        pipe.close()


def _outputs(proc: subprocess.Popen[bytes], timeout_s: float) -> Iterator[Output | Exited]:
    deadline = time.monotonic() + timeout_s
    selector = selectors.DefaultSelector()
    try:
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            if pipe is not None:
                selector.register(pipe, selectors.EVENT_READ, name)
        timed_out = False
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                proc.kill()
                break
            for key, _ in selector.select(min(remaining, 1.0)):
                data = os.read(key.fd, READ_CHUNK)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                yield Output(str(key.data), data)
        code = proc.wait()
        message = f"killed after {timeout_s:g}s" if timed_out else ""
        yield Exited(code if code >= 0 else 128 - code, message)
    finally:
        selector.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def whole_node(vc: VirtualClusterRow) -> Resources:
    """What one node of the cluster offers: a job's default per-task request in it."""
    return Resources(vc.cpu_milli, vc.memory, vc.gpu)


def live_vc(session: Session, tenant_id: int, name: str) -> VirtualClusterRow | None:
    """The tenant's live cluster of that name (jobs are submitted into it by name)."""
    return _live(session, tenant_id, name)
