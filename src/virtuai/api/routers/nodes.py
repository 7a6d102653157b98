from __future__ import annotations

from fastapi import APIRouter

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.common import ResourcesOut
from virtuai.api.schemas.nodes import GpuOut, NodeOut
from virtuai.domain.resources import Resources
from virtuai.domain.units import MILLI
from virtuai.services.nodes import NodeView, list_nodes
from virtuai.store.db import read_transaction

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])


def _resources(r: Resources) -> ResourcesOut:
    return ResourcesOut(cpu=r.cpu_milli / MILLI, memory=r.memory, gpu=r.gpu)


def _to_api(view: NodeView) -> NodeOut:
    node = view.state.node
    return NodeOut(
        name=node.name,
        site=node.site,
        pool=node.pool,
        capacity=_resources(node.capacity),
        allocated=_resources(view.state.allocated),
        gpus=[
            GpuOut(
                index=g.index, model=g.model, memory=g.memory, busy=g.index in view.state.busy_gpus
            )
            for g in node.gpus
        ],
        updated_at=view.row.updated_at,
    )


@router.get("")
def nodes(caller: CallerDep, context: Context) -> list[NodeOut]:
    with read_transaction(context.sessions) as session:
        return [_to_api(v) for v in list_nodes(session, caller)]
