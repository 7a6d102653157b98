"""``virtuai port-forward``: where a forwarded TCP connection goes, and who may open it.

The caller must be allowed to act on the job or the cluster (a member or owner
of its tenant, or an administrator, as for cancel and ``vc exec``); another
tenant's job or cluster is "not found", like a missing one.  A job must be
running, with the task's process started; a job that has ended says so.

Where the connection goes:

- a task of a plain job runs on this machine, in the host's network namespace,
  where a port may belong to anyone: the driver says at which address a process
  *of that task* listens on the port (``drivers.base.PortReach``), and nothing
  else is ever reached;
- a task of a job in a virtual cluster, or ``VC/NODE``: inside the node's network
  namespace (``VcRuntime.connect``), where everything belongs to the tenant's cluster.

A task on another machine: the request goes to the server of the task's node
(``PeerTarget``: the node's registered address, on the port every server listens
on), with the caller's credential, and that server checks and connects as above.
A request handed over so (``FORWARDED_BY``) is never handed on again.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.vcluster import VcState, vnode_hostname
from virtuai.domain.workload import JobState
from virtuai.drivers.base import Driver, PortReach
from virtuai.errors import Conflict, InvalidRequest
from virtuai.services.access import Caller
from virtuai.services.jobs import get_job
from virtuai.services.vclusters import VcRuntimeAccess, exec_target
from virtuai.store.inventory import placement_from_json
from virtuai.store.models import NodeRow, TaskRow, VirtualClusterRow

CONNECT_TIMEOUT_S = 5.0
# Marks a request one server handed to another (port-forward and the proxy alike).
FORWARDED_BY = "X-Virtuai-Forwarded-By"


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    """A port the caller may reach; ``connect()`` blocks (call it from a worker thread)."""

    description: str  # "port 8000 of job 12 (task 0)"
    connect: Callable[[], socket.socket]


@dataclass(frozen=True, slots=True)
class PeerTarget:
    """A task on another machine: the same request goes to its node's server."""

    description: str
    url: str  # "ws://<node address>:<port>"; the request's own path and query follow
    node: str


def parse_port(value: str | None, field: str = "port") -> int:
    try:
        port = int(value or "")
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise InvalidRequest(
            f"{field}: give a TCP port from 1 to 65535, not {value!r}", field=field
        )
    return port


def parse_index(value: str | None, field: str) -> int:
    if value is None or value == "":
        return 0
    if not value.isdigit() or len(value) > 6:
        raise InvalidRequest(f"{field}: give a number from 0, not {value!r}", field=field)
    return int(value)


def job_target(
    session: Session,
    caller: Caller,
    job_id: int,
    task_index: int,
    port: int,
    drivers: Mapping[str, Driver],
    vcs: VcRuntimeAccess,
    *,
    peer_port: int = 0,
    forwarded: bool = False,
) -> ForwardTarget | PeerTarget:
    """Where the connection goes.  ``peer_port``: the port of other machines' servers (0:
    a task elsewhere is refused); ``forwarded``: another server sent this request."""
    job = get_job(session, caller, job_id)
    caller.require_submit(job.tenant.name)
    state = JobState(job.state)
    if state.is_finished():
        raise Conflict(
            f"job {job_id} has ended ({state}): there is nothing to forward to", field="id"
        )
    if state is not JobState.RUNNING:
        raise Conflict(f"job {job_id} is {state}, not running", field="id")
    if not 0 <= task_index < job.tasks:
        raise InvalidRequest(
            f"job {job_id} has tasks 0 to {job.tasks - 1}; there is no task {task_index}",
            field="task",
        )
    task = session.scalars(
        select(TaskRow).where(
            TaskRow.job_id == job.id, TaskRow.attempt == job.attempt, TaskRow.index == task_index
        )
    ).first()
    if task is None or task.handle is None or task.outcome is not None:
        raise Conflict(f"task {task_index} of job {job_id} is not running", field="task")
    what = f"port {port} of job {job_id} (task {task_index})"
    if job.vc_id is not None:
        vc = session.get(VirtualClusterRow, job.vc_id)
        if vc is None or vc.state != VcState.RUNNING.value:
            raise Conflict(f"the virtual cluster of job {job_id} is not running", field="id")
        indices = [
            p.index for p in placement_from_json(vc.placement)
            if vnode_hostname(vc.name, p.index) == task.node
        ]  # fmt: skip
        if not indices:
            raise Conflict(f"task {task_index} of job {job_id} has no virtual node", field="task")
        runtime, runtime_id, index = vcs.require(), vc.runtime_id, indices[0]
        return ForwardTarget(
            f"{what} on {task.node}",
            lambda: runtime.connect(runtime_id, index, port, CONNECT_TIMEOUT_S),
        )
    driver = drivers.get(task.driver)
    if driver is None or not isinstance(driver, PortReach):
        raise Conflict(
            f"job {job_id} runs where this server cannot reach its ports ({task.driver})",
            field="id",
        )
    if task.host is not None and task.host not in driver.node_names():
        address = session.scalar(select(NodeRow.address).where(NodeRow.name == task.host))
        if not address or not peer_port or forwarded:
            raise Conflict(
                f"task {task_index} of job {job_id} runs on node {task.host}, whose server "
                "this one cannot hand the connection to; ask that node's server",
                field="task",
            )
        host = f"[{address}]" if ":" in address else address
        return PeerTarget(f"{what} on {task.host}", f"ws://{host}:{peer_port}", task.host)
    handle = dict(task.handle)

    def connect() -> socket.socket:
        address = driver.listener(handle, port)
        if address is None:
            raise Conflict(f"nothing of job {job_id} (task {task_index}) listens on port {port}",
                           field="port")  # fmt: skip
        try:
            return socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise Conflict(
                f"cannot connect to {what}: {exc.strerror or exc}", field="port"
            ) from None

    return ForwardTarget(what, connect)


def node_target(
    session: Session,
    caller: Caller,
    name: str,
    tenant: str | None,
    index: int,
    port: int,
    vcs: VcRuntimeAccess,
) -> ForwardTarget:
    target = exec_target(session, caller, name, tenant, index, vcs)
    runtime = vcs.require()
    return ForwardTarget(
        f"port {port} of node {target.hostname}",
        lambda: runtime.connect(target.runtime_id, target.index, port, CONNECT_TIMEOUT_S),
    )
