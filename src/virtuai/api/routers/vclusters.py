from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.common import ResourcesOut
from virtuai.api.schemas.jobs import EventOut
from virtuai.api.schemas.vclusters import VcCreate, VcDetailOut, VcExec, VcNodeOut, VcOut
from virtuai.domain.resources import Resources
from virtuai.domain.units import MILLI, MIN_CPU_MILLI, MIN_MEMORY, parse_cpu, parse_memory
from virtuai.domain.vcluster import VcRequest
from virtuai.services import vclusters as service
from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import VirtualClusterRow
from virtuai.vcruntime import node_address
from virtuai.vcruntime.ipam import parse_subnet

router = APIRouter(prefix="/api/v1/vcs", tags=["virtual clusters"])

TenantQuery = Annotated[str | None, Query(description="the cluster's tenant, if ambiguous")]
EXEC_MEDIA_TYPE = "application/x-ndjson"


def request_from_api(body: VcCreate) -> VcRequest:
    return VcRequest(
        name=body.name,
        nodes=body.nodes,
        per_node=Resources(
            cpu_milli=parse_cpu(body.resources.cpu, field="resources.cpu", minimum=MIN_CPU_MILLI),
            memory=parse_memory(
                body.resources.memory, field="resources.memory", minimum=MIN_MEMORY
            ),
            gpu=body.resources.gpu,
        ),
        image=body.image,
        gateway=body.gateway,
    )


def vc_to_api(vc: VirtualClusterRow) -> VcOut:
    return VcOut(**_fields(vc))


def _fields(vc: VirtualClusterRow) -> dict[str, object]:
    return {
        "id": vc.id,
        "name": vc.name,
        "tenant": vc.tenant.name,
        "user": vc.user.name,
        "state": vc.state,
        "reason": vc.reason,
        "node_count": vc.nodes,
        "resources": ResourcesOut(cpu=vc.cpu_milli / MILLI, memory=vc.memory, gpu=vc.gpu),
        "image": vc.image,
        "gateway": vc.gateway,
        "subnet": vc.subnet,
        "queue_position": vc.queue_position,
        "nodes": _nodes(vc),
        "created_at": vc.created_at,
        "updated_at": vc.updated_at,
        "deleted_at": vc.deleted_at,
        "observed_at": vc.observed_at,
    }


def _nodes(vc: VirtualClusterRow) -> list[VcNodeOut]:
    """Each node: where it is placed (the row's placement) and how it was last seen."""
    placed = {p["index"]: p for p in vc.placement}
    seen = {n["index"]: n for n in vc.observed}
    subnet = parse_subnet(vc.subnet)
    nodes = []
    for i in range(vc.nodes):
        placement, observed = placed.get(i, {}), seen.get(i, {})
        nodes.append(
            VcNodeOut(
                index=i,
                hostname=f"{vc.name}-{i}",
                address=str(node_address(subnet, i)),
                state=str(observed.get("state", "pending")),
                host=placement.get("node"),
                gpu_indices=list(placement.get("gpu_indices", [])),
                problems=list(observed.get("problems", [])),
            )
        )
    return nodes


@router.post("", status_code=status.HTTP_201_CREATED)
def create(body: VcCreate, caller: CallerDep, context: Context) -> VcOut:
    """A new cluster, waiting for the scheduler to admit all its nodes; then it is built."""
    request = request_from_api(body)
    with transaction(context.sessions) as session:
        vc = service.create_vc(
            session,
            caller,
            body.tenant,
            request,
            context.vcs,
            context.rules,
            context.vc_options,
            context.clock.now(),
        )
        result = vc_to_api(vc)
    context.wake.set()
    return result


@router.get("")
def list_vcs(
    caller: CallerDep,
    context: Context,
    tenant: str | None = None,
    all: Annotated[bool, Query(description="also deleted clusters")] = False,
) -> list[VcOut]:
    with read_transaction(context.sessions) as session:
        rows = service.list_vcs(session, caller, tenant, include_deleted=all)
        return [vc_to_api(vc) for vc in rows]


@router.get("/{name}")
def show(name: str, caller: CallerDep, context: Context, tenant: TenantQuery = None) -> VcDetailOut:
    with read_transaction(context.sessions) as session:
        detail = service.get_vc_detail(session, caller, name, tenant)
        return VcDetailOut(
            **_fields(detail.vc),
            events=[EventOut.model_validate(e) for e in detail.events],
        )


@router.post("/{name}/suspend")
def suspend(name: str, caller: CallerDep, context: Context, tenant: TenantQuery = None) -> VcOut:
    """Preempt its jobs (requeued), stop its nodes keeping their disks, free its resources."""
    with transaction(context.sessions) as session:
        vc = service.suspend_vc(session, caller, name, tenant, context.vcs, context.clock.now())
        result = vc_to_api(vc)
    context.wake.set()
    return result


@router.post("/{name}/resume")
def resume(name: str, caller: CallerDep, context: Context, tenant: TenantQuery = None) -> VcOut:
    """Admitted again (possibly onto other CPUs and GPUs), then started with its disks."""
    with transaction(context.sessions) as session:
        vc = service.resume_vc(session, caller, name, tenant, context.vcs, context.clock.now())
        result = vc_to_api(vc)
    context.wake.set()
    return result


@router.delete("/{name}")
def delete(name: str, caller: CallerDep, context: Context, tenant: TenantQuery = None) -> VcOut:
    """Cancel its jobs and remove everything of it; the name is free again afterwards."""
    with transaction(context.sessions) as session:
        vc = service.delete_vc(session, caller, name, tenant, context.vcs, context.clock.now())
        result = vc_to_api(vc)
    context.wake.set()
    return result


@router.post(
    "/{name}/exec",
    response_class=StreamingResponse,
    responses={200: {"content": {EXEC_MEDIA_TYPE: {}}}},
)
def exec_command(
    name: str, body: VcExec, caller: CallerDep, context: Context, tenant: TenantQuery = None
) -> StreamingResponse:
    """Run a command in a node as the tenant's unprivileged user, in ``/shared``.

    The answer streams one JSON object per line: ``{"stream": "stdout" | "stderr",
    "data": <base64>}`` as output comes, and last ``{"exit_code": N, "message": ...}``.
    """
    access = context.vcs
    with transaction(context.sessions) as session:
        target = service.exec_target(session, caller, name, tenant, body.node, access)
    timeout = min(
        body.timeout or context.vc_options.exec_timeout_s, context.vc_options.exec_timeout_s
    )
    stdin = body.stdin.encode() if body.stdin is not None else None
    events = service.run_in_node(access.require(), target, body.command, timeout, stdin)
    return StreamingResponse(_frames(events), media_type=EXEC_MEDIA_TYPE)


def _frames(events: Iterator[service.Output | service.Exited]) -> Iterator[bytes]:
    for event in events:
        if isinstance(event, service.Output):
            frame: dict[str, object] = {
                "stream": event.stream,
                "data": base64.b64encode(event.data).decode(),
            }
        else:
            frame = {"exit_code": event.exit_code, "message": event.message}
        yield json.dumps(frame).encode() + b"\n"
