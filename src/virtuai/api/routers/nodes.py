from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.common import ResourcesOut
from virtuai.api.schemas.nodes import DrainIn, GpuOut, NodeOut
from virtuai.domain.cluster import NodeState
from virtuai.domain.resources import Resources
from virtuai.domain.units import MILLI
from virtuai.services.nodes import NodeView, list_nodes, set_node_state
from virtuai.store.db import read_transaction, transaction

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])


def _resources(r: Resources) -> ResourcesOut:
    return ResourcesOut(cpu=r.cpu_milli / MILLI, memory=r.memory, gpu=r.gpu)


def _to_api(view: NodeView) -> NodeOut:
    node = view.state.node
    return NodeOut(
        name=node.name,
        site=node.site,
        pool=node.pool,
        node_class=view.row.node_class,
        labels=dict(view.row.labels or {}),
        capacity=_resources(node.capacity),
        allocated=_resources(view.state.allocated),
        gpus=[
            GpuOut(
                index=g.index, model=g.model, memory=g.memory, busy=g.index in view.state.busy_gpus
            )
            for g in node.gpus
        ],
        state=view.shown_state,
        heartbeat_age_s=view.heartbeat_age_s,
        leader=view.leader,
        address=view.row.address,
        updated_at=view.row.updated_at,
    )


def _one(context: Context, caller: CallerDep, name: str) -> NodeOut:
    with read_transaction(context.sessions) as session:
        views = [v for v in list_nodes(session, caller, context.clock.now()) if v.row.name == name]
    return _to_api(views[0])


@router.get("")
def nodes(caller: CallerDep, context: Context) -> list[NodeOut]:
    with transaction(context.sessions) as session:
        return [_to_api(v) for v in list_nodes(session, caller, context.clock.now())]


@router.post("/{name}/cordon")
def cordon(name: str, caller: CallerDep, context: Context) -> NodeOut:
    """No new work on the node; what runs there goes on (administrators)."""
    with transaction(context.sessions) as session:
        set_node_state(session, caller, name, NodeState.CORDONED)
    return _one(context, caller, name)


@router.post("/{name}/drain")
def drain(
    name: str, caller: CallerDep, context: Context, body: Annotated[DrainIn | None, Body()] = None
) -> NodeOut:
    """No new work; running jobs are waited for, or requeued with ``requeue`` (administrators)."""
    requeue = body.requeue if body is not None else False
    with transaction(context.sessions) as session:
        set_node_state(session, caller, name, NodeState.DRAINING, requeue=requeue)
    context.wake.set()
    return _one(context, caller, name)


@router.post("/{name}/uncordon")
def uncordon(name: str, caller: CallerDep, context: Context) -> NodeOut:
    """Ready for new work again (administrators)."""
    with transaction(context.sessions) as session:
        set_node_state(session, caller, name, NodeState.READY)
    context.wake.set()
    return _one(context, caller, name)
